"""Fault tests: the real API server made to throttle, stall, restart or refuse our credentials.

Each test that breaks the API server breaks something of its own: a proxy in front of the
shared control plane, or the control plane these tests start for themselves (throttled with
low in-flight limits, and killed and started again), so no other test ever sees the fault.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, config

from tests import objects
from tests.controlplane import (
    RunningControlPlane,
    kill_apiserver,
    restart_apiserver,
    start,
    stop,
)
from tests.faults.identity import service_account_kubeconfig

SELECTOR = {"app": "web"}

# Without priority and fairness the API server's plain in-flight limits apply: beyond them it
# answers 429 with Retry-After at once, instead of queueing. Members of system:masters (our
# admin) are never throttled, so the tests that want 429s act as a service account.
THROTTLED = (
    "--enable-priority-and-fairness=false",
    "--max-mutating-requests-inflight=2",
    "--max-requests-inflight=20",
)


@dataclass
class FaultPlane:
    """The fault tests' own control plane, which they may throttle, kill and start again."""

    plane: RunningControlPlane

    def kill_apiserver(self) -> None:
        kill_apiserver(self.plane)

    async def restart_apiserver(self) -> None:
        # Waiting for /readyz blocks: off the event loop, where k8sailor keeps serving.
        self.plane = await asyncio.to_thread(restart_apiserver, self.plane, tie_to_parent=True)


@pytest.fixture(scope="session")
def fault_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultPlane]:
    holder = FaultPlane(
        start(tmp_path_factory.mktemp("faultplane"), tie_to_parent=True, apiserver_args=THROTTLED)
    )
    try:
        yield holder
    finally:
        stop(holder.plane)


@pytest.fixture(scope="session")
async def fault_admin(fault_plane: FaultPlane) -> AsyncIterator[client.ApiClient]:
    api = await config.new_client_from_config(config_file=str(fault_plane.plane.kubeconfig))
    async with api:
        yield api


async def create_deployment(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    """The Deployment "web" in namespace, as the API server returned it."""
    apps = client.AppsV1Api(api)
    created = await apps.create_namespaced_deployment(
        namespace, objects.deployment("web", SELECTOR, [("http", 8088, "TCP")])
    )
    result: dict[str, Any] = api.sanitize_for_serialization(created)
    return result


@pytest.fixture
async def deployment(api_client: client.ApiClient, namespace: str) -> dict[str, Any]:
    """The Deployment "web" in the test's namespace on the shared control plane."""
    return await create_deployment(api_client, namespace)


@pytest.fixture
async def fault_namespace(fault_admin: client.ApiClient) -> str:
    """A namespace with the Deployment "web" on the fault tests' own control plane (left
    behind: that control plane goes away with the session)."""
    name = f"k8sailor-fault-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(fault_admin)
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    await create_deployment(fault_admin, name)
    return name


@pytest.fixture
async def throttled_kubeconfig(
    fault_plane: FaultPlane, fault_admin: client.ApiClient, fault_namespace: str, tmp_path: Path
) -> Path:
    """A kubeconfig for a service account that may edit fault_namespace, and is throttled."""
    return await service_account_kubeconfig(
        fault_admin, fault_plane.plane.kubeconfig, fault_namespace, tmp_path
    )
