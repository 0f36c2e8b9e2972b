"""The ways of creating Services that the benchmark compares, and the cluster-side chores
between runs (fresh names, deleting what a run created).

Every path creates the same ClusterIP Service for the rule NAME=80:8080 (selector, port name,
owner reference, label, annotation), so that they differ only in how they get it there."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client as kube
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client.exceptions import ApiException

from bench.measure import Sample
from bench.workload import (
    CLEANUP_CONCURRENCY,
    DEPLOYMENT,
    PORT,
    SELECTOR,
    TARGET,
)
from client import Client, Outcome, RequestFailed
from server.manifests import (
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    RULE_ANNOTATION,
)
from tests import objects


def raw_body(name: str, uid: str) -> Any:
    """The Service k8sailor builds for `NAME=80:8080`, as a kubernetes_asyncio user writes it."""
    return kube.V1Service(
        api_version="v1",
        kind="Service",
        metadata=kube.V1ObjectMeta(
            name=name,
            labels={MANAGED_BY_LABEL: MANAGED_BY_VALUE},
            annotations={RULE_ANNOTATION: f"{name}={PORT}:{TARGET}"},
            owner_references=[
                kube.V1OwnerReference(
                    api_version="apps/v1",
                    kind="Deployment",
                    name=DEPLOYMENT,
                    uid=uid,
                    controller=True,
                )
            ],
        ),
        spec=kube.V1ServiceSpec(
            type="ClusterIP",
            selector=dict(SELECTOR),
            ports=[
                kube.V1ServicePort(
                    name=f"{PORT}-{TARGET}", protocol="TCP", port=PORT, target_port=TARGET
                )
            ],
        ),
    )


async def run_raw(core: Any, namespace: str, uid: str, names: Sequence[str], c: int) -> Sample:
    """c workers, each creating the next Service as soon as its last one is answered."""
    queue = iter(names)
    sample = Sample()

    async def worker() -> None:
        for name in queue:
            started = time.perf_counter()
            try:
                await core.create_namespaced_service(namespace, raw_body(name, uid))
            except ApiException as error:
                sample.fail(f"{name}: {error.status} {error.reason}")
                continue
            now = time.perf_counter()
            sample.ok(now - started, now)

    await asyncio.gather(*(worker() for _ in range(min(c, len(names)))))
    sample.end = time.perf_counter()
    return sample


def chunked(items: Sequence[str], parts: int) -> list[list[str]]:
    """items split into `parts` contiguous chunks whose sizes differ by at most one."""
    size, extra = divmod(len(items), parts)
    chunks, at = [], 0
    for part in range(parts):
        end = at + size + (1 if part < extra else 0)
        chunks.append(list(items[at:end]))
        at = end
    return chunks


async def run_k8sailor(
    k8sailor: Client, namespace: str, names: Sequence[str], requests: int
) -> Sample:
    """`requests` concurrent CreateServices requests sharing the rules; the latency of a rule
    is the time from sending the requests to its result's arrival."""
    chunks = chunked([f"{name}={PORT}:{TARGET}" for name in names], requests)
    sample = Sample(requests=requests)

    sample.start = time.perf_counter()
    await asyncio.gather(
        *(_send(k8sailor, namespace, chunk, sample, sample.start) for chunk in chunks)
    )
    sample.end = time.perf_counter()
    return sample


async def _send(
    k8sailor: Client, namespace: str, rules: list[str], sample: Sample, since: float
) -> None:
    """One CreateServices request, each result recorded as it arrives, its latency counted
    from `since`; a failed request fails the rules it did not report."""
    seen = 0
    try:
        async for result in k8sailor.create_services(DEPLOYMENT, rules, namespace=namespace):
            now = time.perf_counter()
            seen += 1
            if result.outcome is Outcome.CREATED:
                sample.ok(now - since, now)
            else:
                sample.fail(f"{result.rule}: {result.outcome.name} {result.error}")
    except RequestFailed as error:
        for rule in rules[seen:]:
            sample.fail(f"{rule}: {error}")


async def run_kubectl(
    kubectl: str, env: dict[str, str], namespace: str, names: Sequence[str]
) -> Sample:
    sample = Sample()
    for name in names:
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            kubectl, "create", "service", "clusterip", name, f"--tcp={PORT}:{TARGET}",
            "-n", namespace, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await process.communicate()
        now = time.perf_counter()
        if process.returncode == 0:
            sample.ok(now - started, now)
        else:
            sample.fail(f"{name}: kubectl exited {process.returncode}: {err.decode().strip()}")
    sample.end = time.perf_counter()
    return sample


# --------------------------------------------------------------------------- the cluster side


class Names:
    """Fresh, never reused Service names: s<run>-<i> (a DNS-1035 label)."""

    def __init__(self) -> None:
        self._run = 0

    def fresh(self, count: int) -> list[str]:
        self._run += 1
        return [f"s{self._run}-{i}" for i in range(count)]


@dataclass(frozen=True)
class Apis:
    """The API clients of a run: one for the measured raw path, another for the chores (the
    workload, deleting between runs), so that chores warm no connection of a path."""

    raw_api: Any
    admin_api: Any
    uid: str  # the Deployment's

    @property
    def raw(self) -> Any:
        return kube.CoreV1Api(self.raw_api)

    @property
    def admin(self) -> Any:
        return kube.CoreV1Api(self.admin_api)


@contextlib.asynccontextmanager
async def workload(kubeconfig: Path, namespace: str) -> AsyncIterator[Apis]:
    """The namespace with the Deployment every path exposes, for the block (deleted after)."""
    raw_api = await kube_config.new_client_from_config(config_file=str(kubeconfig))
    admin_api = await kube_config.new_client_from_config(config_file=str(kubeconfig))
    async with raw_api, admin_api:
        apis = Apis(raw_api, admin_api, await create_workload(admin_api, namespace))
        yield apis
        await apis.admin.delete_namespace(namespace)


async def create_workload(api: Any, namespace: str) -> str:
    """The namespace and the Deployment every path exposes; returns the Deployment's uid."""
    core, apps = kube.CoreV1Api(api), kube.AppsV1Api(api)
    await core.create_namespace(kube.V1Namespace(metadata=kube.V1ObjectMeta(name=namespace)))
    created = await apps.create_namespaced_deployment(
        namespace, objects.deployment(DEPLOYMENT, SELECTOR, [("http", TARGET, "TCP")])
    )
    uid: str = created.metadata.uid
    return uid


async def delete_services(core: Any, namespace: str, names: Sequence[str]) -> None:
    slots = asyncio.Semaphore(CLEANUP_CONCURRENCY)

    async def delete(name: str) -> None:
        async with slots:
            try:
                response = await core.delete_namespaced_service(
                    name, namespace, _preload_content=False
                )
                async with response:
                    await response.read()
            except ApiException as error:
                if error.status != 404:
                    raise

    await asyncio.gather(*(delete(name) for name in names))


async def delete_leftovers(core: Any, namespace: str) -> int:
    """Delete whatever Services are still in the namespace (none, unless a run failed)."""
    listed = await core.list_namespaced_service(namespace)
    names = [item.metadata.name for item in listed.items]
    await delete_services(core, namespace, names)
    return len(names)


async def run_callers(
    k8sailor: Client, namespace: str, names: Sequence[str], rules_per_request: int, callers: int
) -> Sample:
    """`callers` concurrent callers, each sending requests of `rules_per_request` rules one
    after another until every name is taken, as platform services do; the latency of a rule
    is from sending its request to its result's arrival."""
    chunks = [names[at : at + rules_per_request] for at in range(0, len(names), rules_per_request)]
    queue = iter(chunks)
    sample = Sample(requests=len(chunks))

    async def caller() -> None:
        for chunk in queue:
            rules = [f"{name}={PORT}:{TARGET}" for name in chunk]
            await _send(k8sailor, namespace, rules, sample, time.perf_counter())

    sample.start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(min(callers, len(chunks)))))
    sample.end = time.perf_counter()
    return sample


async def run_clientgo(
    binary: Path, kubeconfig: Path, namespace: str, uid: str, names: Sequence[str], c: int
) -> Sample:
    """bench/clientgo in its own process: client-go, c workers, QPS unlimited. It times
    itself from after its warm-up call, so process start-up is not counted."""
    prefix, _ = names[0].rsplit("-", 1)
    if list(names) != [f"{prefix}-{i}" for i in range(len(names))]:
        raise ValueError("client-go names must be PREFIX-0 .. PREFIX-(n-1)")
    process = await asyncio.create_subprocess_exec(
        str(binary), "-kubeconfig", str(kubeconfig), "-namespace", namespace,
        "-deployment", DEPLOYMENT, "-uid", uid, "-app", SELECTOR["app"], "-prefix", prefix,
        "-count", str(len(names)), "-concurrency", str(c),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"bench-clientgo exited {process.returncode}: {err.decode()[-2000:]}")
    figures = json.loads(out)
    sample = Sample(start=0.0)
    sample.latencies = [float(x) for x in figures["latencies_s"]]
    sample.completions = [float(x) for x in figures["completions_s"]]
    sample.errors = [str(x) for x in figures["errors"]]
    sample.end = float(figures["seconds"])
    return sample
