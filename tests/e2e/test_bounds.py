"""The server's own bounds, through real servers: calls at once, health Watch streams, and the
connections /metrics holds."""

from __future__ import annotations

import asyncio
import select
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kubernetes_asyncio import client

import server.observability.endpoint
from server.app import ServerConfig, serving
from server.edge import MAX_HEALTH_WATCHES
from server.observability.endpoint import WAITING, WORKERS
from tests.metrics import scrape


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
