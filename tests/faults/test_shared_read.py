"""Requests that miss the Deployment cache at the same time share a GET, but a request with a
tiny deadline does not make it fail for the others: a slow API server (latency injected by a
TCP proxy in front of the real one) keeps the GET in flight past that deadline, and a request
with a normal deadline still gets its answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from client import Client, Outcome, RequestFailed, Result
from server.app import ServerConfig
from server.kube import ReloadableApiClient, load_api_client
from tests.conftest import Cluster
from tests.faults.identity import server_of, through
from tests.faults.observers import RecordingObserver
from tests.faults.proxy import FaultyProxy, faulty_proxy
from tests.servers import running_over

GUARD_S = 60.0  # against a hang, not a timing assertion


@pytest.fixture
async def proxy(cluster: Cluster) -> AsyncIterator[FaultyProxy]:
    async with faulty_proxy(server_of(cluster.kubeconfig)) as proxy:
        yield proxy


@pytest.fixture
async def api_through_proxy(
    cluster: Cluster, proxy: FaultyProxy, tmp_path: Path
) -> AsyncIterator[ReloadableApiClient]:
    kubeconfig = through(cluster.kubeconfig, tmp_path, f"https://127.0.0.1:{proxy.port}")
    api = await load_api_client(str(kubeconfig), None, pool_size=32)
    async with api:
        yield api


async def expose(k8sailor: Client, namespace: str, rule: str, timeout: float) -> list[Result]:
    return [
        r
        async for r in k8sailor.create_services("web", [rule], namespace=namespace, timeout=timeout)
    ]


async def test_a_tiny_deadline_does_not_fail_the_shared_read_for_the_others(
    proxy: FaultyProxy,
    api_through_proxy: ReloadableApiClient,
    namespace: str,
    deployment: dict[str, Any],
) -> None:
    # The cache watches another namespace only: both requests miss "web" and share a GET.
    config = ServerConfig(listen="127.0.0.1:0", watch_namespaces=("kube-system",))
    observer = RecordingObserver()
    async with running_over(api_through_proxy, config, observer=observer) as (running, k8sailor):
        cache = running.deployments
        assert cache is not None
        await asyncio.wait_for(cache.wait_synced(), GUARD_S)
        # Each chunk, each way, now waits 0.5 s: the GET takes at least a second, longer than
        # the first request's deadline, however fast the machine.
        proxy.latency = 0.5
        hurried = asyncio.create_task(expose(k8sailor, namespace, "hurried=80:http", 0.3))
        async with asyncio.timeout(GUARD_S):
            while cache.misses == 0:  # noqa: ASYNC110 (the cache offers no event for a miss)
                await asyncio.sleep(0.005)
        patient = await expose(k8sailor, namespace, "patient=81:http", 30.0)
        with pytest.raises(RequestFailed) as failed:
            await hurried
    # Its own deadline ended it: the server says so (the read did not answer in time), or the
    # client's deadline is there first.
    assert failed.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert [r.outcome for r in patient] == [Outcome.CREATED], patient
    # The first read could not last for the second request: it read on its own deadline.
    assert cache.misses == 2
    assert observer.started.count(("get", "deployments")) == 2
