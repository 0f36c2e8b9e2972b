"""The callers the authentication benchmarks measure: RBAC that lets one create ClusterIP
Services through k8sailor, and the one-rule dry-run request they send."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import yaml
from kubernetes_asyncio import client as kube

from bench.workload import DEPLOYMENT, PORT, REPO, TARGET
from client import Client, Outcome

ROLE = REPO / "deploy" / "callers" / "k8sailor-expose-internal.yaml"


async def grant_expose(api: Any, namespace: str, subject: dict[str, str]) -> None:
    """Bind deploy/callers' k8sailor-expose-internal role to subject in namespace (the
    ClusterRole is created unless it exists: it outlives the namespace)."""
    rbac = kube.RbacAuthorizationV1Api(api)
    role: Any = yaml.safe_load(ROLE.read_text())
    with contextlib.suppress(kube.ApiException):
        await rbac.create_cluster_role(role)
    binding: Any = {
        "metadata": {"name": "bench"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": role["metadata"]["name"]},
        "subjects": [subject],
    }  # fmt: skip
    await rbac.create_namespaced_role_binding(namespace, binding)


async def dry_run(k8sailor: Client, namespace: str, timeout: float) -> float:
    """One one-rule dry-run request (a Deployment read and a dry-run create on the API
    server, so nothing piles up); its latency in seconds. Anything but CREATED is an error."""
    started = time.monotonic()
    results = [
        result
        async for result in k8sailor.create_services(
            DEPLOYMENT, [f"{PORT}:{TARGET}"], namespace=namespace, dry_run=True, timeout=timeout
        )
    ]
    if [result.outcome for result in results] != [Outcome.CREATED]:
        raise RuntimeError(f"unexpected results: {results}")
    return time.monotonic() - started
