"""A cluster in memory for the lifecycle flows' unit tests (server.domain.lifecycle_context's
LifecycleCluster): Deployments and Services as the API server would answer them, enough of
its preconditions to decide what the flows decide, and seams to make a call fail or never
answer. The real API server's behaviour is what tests/e2e check; this is for the paths it
cannot be made to take on demand, fast."""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import Callable, Mapping
from typing import Any

from server.kube.errors import (
    KubeAlreadyExists,
    KubeConflict,
    KubeError,
    KubeInvalid,
    KubeNotFound,
    KubeUnavailable,
)

Json = dict[str, Any]

UID = "0b7c1e2a-5d3f-4a8e-9c61-00000000d391"
SELECTOR = {"app": "web"}


def deployment(name: str = "web", namespace: str = "ns", uid: str = UID) -> Json:
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
        "spec": {
            "selector": {"matchLabels": dict(SELECTOR)},
            "template": {
                "metadata": {"labels": dict(SELECTOR)},
                "spec": {"containers": [{"name": name, "ports": [{"containerPort": 8088}]}]},
            },
        },
    }


def foreign(name: str, **metadata: Any) -> Json:
    """A Service k8sailor did not make (or one that lost a mark of ours, given in metadata)."""
    return {
        "metadata": {"name": name, "namespace": "ns", **metadata},
        "spec": {"type": "ClusterIP", "selector": {"app": "other"}, "ports": [{"port": 80}]},
    }


class FakeCluster:
    """Answers as server.kube.Kube does. fail[method]: errors its next calls raise, in order;
    hang: methods that never answer, so a call ends when its timeout does (KubeUnavailable,
    reason Timeout, as Kube says it); after_read[name]: what someone else does to the cluster
    right after the next read of that Service, before its answer reaches the flow. calls:
    each call's method and its timeout."""

    def __init__(self) -> None:
        self.deployments: dict[tuple[str, str], Json] = {}
        self.services: dict[tuple[str, str], Json] = {}
        self.fail: dict[str, list[KubeError]] = {}
        self.hang: set[str] = set()
        self.after_read: dict[str, Callable[[], object]] = {}
        self.calls: list[tuple[str, float | None]] = []
        self.applied: list[Json] = []  # the apply_service calls' options, in order
        self._versions = itertools.count(100)
        self._uids = itertools.count(1)

    def add_deployment(self, manifest: Json) -> None:
        meta = manifest["metadata"]
        self.deployments[(meta["namespace"], meta["name"])] = copy.deepcopy(manifest)

    def add_service(self, manifest: Json) -> Json:
        meta = manifest["metadata"]
        stored = copy.deepcopy(manifest)
        stored["metadata"].update(uid=f"svc-{next(self._uids)}", resourceVersion=self._version())
        stored.setdefault("spec", {}).setdefault("clusterIP", "10.96.0.10")
        self.services[(meta["namespace"], meta["name"])] = stored
        return copy.deepcopy(stored)

    def replace_service(self, manifest: Json) -> None:
        """Someone else deletes the Service and makes another of the same name."""
        meta = manifest["metadata"]
        del self.services[(meta["namespace"], meta["name"])]
        self.add_service(manifest)

    def service(self, namespace: str, name: str) -> Json | None:
        return copy.deepcopy(self.services.get((namespace, name)))

    def count(self, method: str) -> int:
        return sum(1 for called, _ in self.calls if called == method)

    # --------------------------------------------------------------- LifecycleCluster

    async def read_deployment(self, namespace: str, name: str, *, timeout: float | None) -> Json:
        await self._enter("read_deployment", timeout)
        found = self.deployments.get((namespace, name))
        if found is None:
            raise KubeNotFound(f'deployments.apps "{name}" not found', status=404)
        return copy.deepcopy(found)

    async def read_service(self, namespace: str, name: str, *, timeout: float | None) -> Json:
        await self._enter("read_service", timeout)
        answer = copy.deepcopy(self.services.get((namespace, name)))
        meddle = self.after_read.pop(name, None)
        if meddle is not None:
            meddle()
        if answer is None:
            raise KubeNotFound(f'services "{name}" not found', status=404, reason="NotFound")
        return answer

    async def list_services(
        self, namespace: str, *, label_selector: str, timeout: float | None
    ) -> Json:
        await self._enter("list_services", timeout)
        key, _, value = label_selector.partition("=")
        items = [
            copy.deepcopy(service)
            for (ns, _), service in self.services.items()
            if ns == namespace and (service["metadata"].get("labels") or {}).get(key) == value
        ]
        return {"kind": "ServiceList", "items": items}

    async def create_service(
        self, namespace: str, manifest: Mapping[str, Any], *, dry_run: bool, timeout: float | None
    ) -> Json:
        await self._enter("create_service", timeout)
        name = manifest["metadata"]["name"]
        if (namespace, name) in self.services:
            raise KubeAlreadyExists(f'services "{name}" already exists', status=409)
        created = copy.deepcopy(dict(manifest))
        created["metadata"]["managedFields"] = [
            {"manager": "k8sailor", "operation": "Update", "fieldsV1": {"f:spec": {}}}
        ]
        if dry_run:
            created["metadata"].update(uid="dry", resourceVersion="")
            return created
        return self.add_service(created)

    async def apply_service(
        self,
        namespace: str,
        manifest: Mapping[str, Any],
        *,
        force: bool,
        dry_run: bool,
        timeout: float | None,
    ) -> Json:
        self.applied.append({"force": force, "dry_run": dry_run})
        await self._enter("apply_service", timeout)
        meta = manifest["metadata"]
        stored = self.services.get((namespace, meta["name"]))
        if stored is None or any(
            meta.get(key) and meta[key] != stored["metadata"].get(key)
            for key in ("uid", "resourceVersion")
        ):
            raise KubeConflict("the object has been modified", status=409, reason="Conflict")
        after = copy.deepcopy(stored)
        for key in ("labels", "annotations", "ownerReferences"):
            if key in meta:
                after["metadata"][key] = copy.deepcopy(meta[key])
        after["spec"] = {**copy.deepcopy(manifest.get("spec") or {}),
                         "clusterIP": stored["spec"].get("clusterIP")}  # fmt: skip
        if after == stored or dry_run:
            return after
        after["metadata"]["resourceVersion"] = self._version()
        self.services[(namespace, meta["name"])] = after
        return copy.deepcopy(after)

    async def replace_managed_fields(
        self,
        namespace: str,
        name: str,
        managed_fields: list[Json],
        *,
        resource_version: str,
        timeout: float | None,
    ) -> Json:
        await self._enter("replace_managed_fields", timeout)
        stored = self.services.get((namespace, name))
        if stored is None:
            raise KubeNotFound(f'services "{name}" not found', status=404)
        if stored["metadata"]["resourceVersion"] != resource_version:
            raise KubeInvalid("the server rejected our request", status=422, reason="Invalid")
        stored["metadata"].update(managedFields=managed_fields, resourceVersion=self._version())
        return copy.deepcopy(stored)

    async def delete_service(
        self,
        namespace: str,
        name: str,
        *,
        uid: str,
        resource_version: str = "",
        dry_run: bool,
        timeout: float | None,
    ) -> Json:
        await self._enter("delete_service", timeout)
        stored = self.services.get((namespace, name))
        if stored is None:
            raise KubeNotFound(f'services "{name}" not found', status=404, reason="NotFound")
        meta = stored["metadata"]
        if meta["uid"] != uid or (resource_version and meta["resourceVersion"] != resource_version):
            raise KubeConflict("Precondition failed", status=409, reason="Conflict")
        if not dry_run:
            del self.services[(namespace, name)]
        return {"kind": "Status", "status": "Success"}

    # ------------------------------------------------------------------------- seams

    async def _enter(self, method: str, timeout: float | None) -> None:
        self.calls.append((method, timeout))
        await asyncio.sleep(0)  # an answer takes a turn of the loop, as any I/O does
        if method in self.hang:
            if timeout is None:
                raise AssertionError(f"{method} was called with no timeout, and never answers")
            await asyncio.sleep(timeout)
            raise KubeUnavailable("API server did not answer in time", reason="Timeout")
        errors = self.fail.get(method)
        if errors:
            raise errors.pop(0)

    def _version(self) -> str:
        return str(next(self._versions))
