"""A slow or silent API server (latency and stalls injected by a TCP proxy in front of the real
one): every rule still gets its one result before the caller's deadline, and a caller that
goes away takes all of its request's work with it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from client import Outcome, Result
from server.app import ServerConfig
from server.kube import ReloadableApiClient, load_api_client
from tests.conftest import Cluster
from tests.faults.identity import server_of, through
from tests.faults.observers import RecordingObserver
from tests.faults.proxy import FaultyProxy, faulty_proxy
from tests.servers import k8sailor_over


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


# A GET per request and no Deployment watch: the connections and calls these tests count are
# the requests' own.
READ_EACH_TIME = ServerConfig(listen="127.0.0.1:0", deployment_cache="off")


def rules(count: int, prefix: str = "s") -> list[str]:
    return [f"{prefix}{index}=80:8088" for index in range(count)]


def creating_tasks() -> list[asyncio.Task[Any]]:
    return [task for task in asyncio.all_tasks() if "Exposer._create" in repr(task.get_coro())]


async def test_a_slow_api_server_still_creates_every_service(
    proxy: FaultyProxy,
    api_through_proxy: ReloadableApiClient,
    namespace: str,
    deployment: dict[str, Any],
) -> None:
    proxy.latency = 0.05  # per chunk, each way: a TLS handshake takes a few of them
    async with k8sailor_over(api_through_proxy) as k8sailor:
        results = [
            r
            async for r in k8sailor.create_services(
                "web", rules(40), namespace=namespace, timeout=60
            )
        ]
    assert sorted(result.index for result in results) == list(range(40))
    assert {result.outcome for result in results} == {Outcome.CREATED}


async def test_stalled_connections_end_as_deadline_exceeded_before_the_deadline(
    proxy: FaultyProxy,
    api_through_proxy: ReloadableApiClient,
    namespace: str,
    deployment: dict[str, Any],
) -> None:
    # All 10 creates at once, so that each needs a connection of its own: the adaptive limit
    # would send a few at a time, and later ones would reuse the connection that works.
    config = ServerConfig(listen="127.0.0.1:0", deployment_cache="off", concurrency_limit="fixed")
    async with k8sailor_over(api_through_proxy, config=config) as k8sailor:
        # One pooled connection is open and well; every connection opened after it hangs.
        warm = [r async for r in k8sailor.create_services("web", ["w=81"], namespace=namespace)]
        assert [result.outcome for result in warm] == [Outcome.CREATED]
        proxy.stall_new = True
        # No RequestFailed (DEADLINE_EXCEEDED): every result arrives before the deadline.
        stalled: list[Result] = [
            r
            async for r in k8sailor.create_services(
                "web", rules(10), namespace=namespace, timeout=3
            )
        ]
        proxy.release()
        again = [
            r
            async for r in k8sailor.create_services(
                "web", rules(10), namespace=namespace, timeout=30
            )
        ]

    assert sorted(result.index for result in stalled) == list(range(10))
    unanswered = [result for result in stalled if result.outcome is Outcome.FAILED]
    # At most one create found the one connection that still works.
    assert len(unanswered) >= 9
    assert {result.reason for result in unanswered} == {"DeadlineExceeded"}
    assert {result.outcome for result in stalled} <= {Outcome.FAILED, Outcome.CREATED}
    # The API server was never the problem: once the way is clear, every rule is there.
    assert sorted(result.index for result in again) == list(range(10))
    assert {result.outcome for result in again} <= {Outcome.CREATED, Outcome.UNCHANGED}


async def test_a_caller_that_goes_away_takes_its_work_with_it(
    proxy: FaultyProxy,
    api_through_proxy: ReloadableApiClient,
    namespace: str,
    deployment: dict[str, Any],
) -> None:
    proxy.latency = 0.05  # creates are still in flight when the caller leaves
    observer = RecordingObserver()
    async with k8sailor_over(api_through_proxy, observer, READ_EACH_TIME) as k8sailor:
        async for _ in k8sailor.create_services("web", rules(200), namespace=namespace):
            break  # the caller has seen enough, and goes away mid-stream
        # The server notices at once; give it a bounded while to cancel what was running.
        for _ in range(200):
            if not creating_tasks() and len(observer.started) == len(observer.finished):
                break
            await asyncio.sleep(0.05)
        assert creating_tasks() == []
        assert len(observer.started) == len(observer.finished)  # nothing left in flight
        started = len(observer.started)
        await asyncio.sleep(1.0)  # were anything left to start a create, it would by now
        assert len(observer.started) == started
    creates = sum(1 for verb, _ in observer.started if verb == "create")
    assert 1 <= creates < 200
