"""The server's own bounds, through real servers: calls at once, health Watch streams, and the
connections /metrics holds."""

from __future__ import annotations

import asyncio
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kubernetes_asyncio import client

import server.api.identity_free
import server.observability.endpoint
from k8sailor.v1 import exposure_pb2 as pb
from k8sailor.v1 import exposure_pb2_grpc
from server.api.health import MAX_HEALTH_RPCS
from server.api.identity_free import MAX_HEALTH_WATCHES, MAX_IDENTITY_FREE_CALLS
from server.app import ServerConfig, serving
from server.observability.endpoint import WAITING, WORKERS
from tests.metrics import scrape
from tests.servers import never_sending


async def watching(stub: health_pb2_grpc.HealthStub, stack: AsyncExitStack) -> None:
    """A health Watch stream, open until the stack closes, once its first answer came (so it
    is surely in flight on the server)."""
    call = stub.Watch(health_pb2.HealthCheckRequest())
    stack.callback(call.cancel)
    first = await call.read()
    assert first.status == health_pb2.HealthCheckResponse.SERVING


async def check(stub: health_pb2_grpc.HealthStub) -> grpc.StatusCode:
    try:
        await stub.Check(health_pb2.HealthCheckRequest(), timeout=30)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_a_call_beyond_the_concurrency_bound_is_resource_exhausted(
    api_client: client.ApiClient,
) -> None:
    config = ServerConfig(listen="127.0.0.1:0", max_concurrent_rpcs=2)
    async with (
        serving(api_client, config, grace=0.5) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        stub = health_pb2_grpc.HealthStub(channel)
        async with AsyncExitStack() as stack:
            for _ in range(2):
                await watching(stub, stack)
            beyond = await check(stub)
        # The streams ended: the bound is on calls at once, not on calls in all.
        for _ in range(100):  # until the server has seen them end
            after = await check(stub)
            if after is grpc.StatusCode.OK:
                break
            await asyncio.sleep(0.05)

    assert beyond is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert after is grpc.StatusCode.OK


@pytest.mark.parametrize("port", ["main", "health"])
async def test_health_watch_streams_are_capped_and_checks_still_answer(
    api_client: client.ApiClient, port: str
) -> None:
    config = ServerConfig(listen="127.0.0.1:0", health_listen="127.0.0.1:0")
    async with serving(api_client, config, grace=0.5) as running:
        number = running.port if port == "main" else running.health_port
        async with grpc.aio.insecure_channel(f"127.0.0.1:{number}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            async with AsyncExitStack() as stack:
                for _ in range(MAX_HEALTH_WATCHES):
                    await watching(stub, stack)
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await watching(stub, stack)
                probe = await check(stub)

    assert raised.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert raised.value.details() == (
        f"this server serves at most {MAX_HEALTH_WATCHES} health Watch streams at once; use "
        "Check (as probes do), or watch again later"
    )
    assert probe is grpc.StatusCode.OK


async def silent_check(channel: grpc.aio.Channel) -> tuple[grpc.StatusCode, str]:
    """A health Check whose request never comes: the client holds its stream open."""
    return await never_sending(channel, "/grpc.health.v1.Health/Check")


@pytest.mark.parametrize("port", ["main", "health"])
async def test_silent_health_checks_cannot_take_every_call_slot(
    api_client: client.ApiClient, monkeypatch: pytest.MonkeyPatch, port: str
) -> None:
    # Long enough for the calls below on a busy machine; the default is 1 s.
    monkeypatch.setattr(server.api.identity_free, "IDENTITY_FREE_RECEIVE_SECONDS", 5.0)
    # As many silent calls as either port serves at once.
    slots = MAX_HEALTH_RPCS
    config = ServerConfig(
        listen="127.0.0.1:0", health_listen="127.0.0.1:0", max_concurrent_rpcs=slots
    )
    async with serving(api_client, config, grace=0.5) as running:
        number = running.port if port == "main" else running.health_port
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{number}") as silent_channel,
            grpc.aio.insecure_channel(f"127.0.0.1:{number}") as channel,
        ):
            stub = health_pb2_grpc.HealthStub(channel)
            silent = [asyncio.ensure_future(silent_check(silent_channel)) for _ in range(slots)]
            # Until the silent calls are in: then a normal Check is refused too.
            for _ in range(200):
                if await check(stub) is grpc.StatusCode.RESOURCE_EXHAUSTED:
                    break
                await asyncio.sleep(0.05)
            listed: grpc.StatusCode | None = None
            if port == "main":
                try:
                    await exposure_pb2_grpc.ExposureServiceStub(channel).ListServices(
                        pb.ListServicesRequest(namespace="default", deployment="web"), timeout=30
                    )
                    listed = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as error:
                    listed = error.code()
            ended = Counter(await asyncio.gather(*silent))
            for _ in range(100):  # until the server has seen them end
                after = await check(stub)
                if after is grpc.StatusCode.OK:
                    break
                await asyncio.sleep(0.05)

    # The servicer answered (there is no Deployment "web"): the call got a slot.
    assert listed is (grpc.StatusCode.NOT_FOUND if port == "main" else None)
    assert ended == {
        (
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "the request message did not arrive within 5 s",
        ): MAX_IDENTITY_FREE_CALLS,
        (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"this server serves at most {MAX_IDENTITY_FREE_CALLS} calls that need no identity "
            "(health checks) at once on this port; try again shortly",
        ): slots - MAX_IDENTITY_FREE_CALLS,
    }
    assert after is grpc.StatusCode.OK


@pytest.fixture
async def metrics_port(api_client: client.ApiClient) -> AsyncIterator[int]:
    config = ServerConfig(listen="127.0.0.1:0", metrics_listen="127.0.0.1:0")
    async with serving(api_client, config, grace=0.5) as running:
        assert running.telemetry.metrics_port is not None
        yield running.telemetry.metrics_port


def closed_by_server(connection: socket.socket, within: float) -> bool:
    """Whether the server closed connection (EOF or reset) within `within` seconds."""
    readable, _, _ = select.select([connection], [], [], within)
    if not readable:
        return False
    try:
        return connection.recv(1) == b""
    except ConnectionResetError:
        return True


async def test_a_metrics_connection_that_sends_no_request_in_time_is_closed(
    monkeypatch: pytest.MonkeyPatch, api_client: client.ApiClient
) -> None:
    monkeypatch.setattr(server.observability.endpoint, "REQUEST_SECONDS", 0.5)
    config = ServerConfig(listen="127.0.0.1:0", metrics_listen="127.0.0.1:0")
    async with serving(api_client, config, grace=0.5) as running:
        port = running.telemetry.metrics_port
        assert port is not None
        with (
            socket.create_connection(("127.0.0.1", port)) as idle,
            socket.create_connection(("127.0.0.1", port)) as trickling,
        ):
            trickling.sendall(b"GET /metrics HTTP/1.1\r\n")  # and never the rest
            closed = await asyncio.to_thread(
                lambda: [closed_by_server(idle, 60), closed_by_server(trickling, 60)]
            )
        scraped = scrape(port)

    assert closed == [True, True]
    # Scrapes are still answered.
    assert any(name == "python_info" for name, _ in scraped)


async def test_idle_metrics_connections_hold_a_bounded_number_of_threads(
    metrics_port: int,
) -> None:
    threads_before = {thread.ident for thread in threading.enumerate()}
    connections = [socket.create_connection(("127.0.0.1", metrics_port)) for _ in range(40)]
    try:
        # Those beyond the workers and the waiting room are closed as soon as accepted: that
        # they are closed shows that every connection was accepted.
        started = time.monotonic()
        closed = 0
        while closed < 40 - WORKERS - WAITING and time.monotonic() - started < 60:
            closed = sum(
                await asyncio.to_thread(lambda: [closed_by_server(c, 0.1) for c in connections])
            )
        # The threads started meanwhile, but for those of asyncio.to_thread's executor.
        threads = [
            thread.name
            for thread in threading.enumerate()
            if thread.ident not in threads_before and not thread.name.startswith("asyncio_")
        ]
    finally:
        for connection in connections:
            connection.close()

    assert closed == 40 - WORKERS - WAITING
    assert len(threads) <= WORKERS, threads
