"""/metrics gives a connection until REQUEST_SECONDS after it was accepted to send its request,
however long it waited for a worker: idle connections cannot hold the port in turns."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from kubernetes_asyncio import client

import server.observability.endpoint
from server.app import ServerConfig, serving
from server.observability.endpoint import WAITING, WORKERS

REQUEST_SECONDS = 2.0


def closed_by_server(connection: socket.socket) -> bool:
    """Whether the server closed it (without waiting: a read that would block is not)."""
    connection.setblocking(False)
    try:
        return connection.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


async def test_idle_connections_waiting_for_a_worker_are_closed_with_the_first(
    monkeypatch: pytest.MonkeyPatch, api_client: client.ApiClient
) -> None:
    monkeypatch.setattr(server.observability.endpoint, "REQUEST_SECONDS", REQUEST_SECONDS)
    config = ServerConfig(listen="127.0.0.1:0", metrics_listen="127.0.0.1:0")
    async with serving(api_client, config, grace=0.5) as running:
        port = running.telemetry.metrics_port
        assert port is not None
        # As many as are served at once and may wait: all accepted, none sends a request.
        connections = [
            socket.create_connection(("127.0.0.1", port)) for _ in range(WORKERS + WAITING)
        ]
        try:
            started = time.monotonic()
            while not any(closed_by_server(c) for c in connections):
                assert time.monotonic() - started < 60
                await asyncio.sleep(0.05)
            # The first ones are closed by their deadline. Were the deadline counted from when
            # a worker got to a connection, the rest would follow WORKERS at a time, one more
            # REQUEST_SECONDS for each batch (the last after 5 of them); counted from
            # acceptance, every one is past its own within one.
            await asyncio.sleep(REQUEST_SECONDS * 1.5)
            closed = sum(closed_by_server(c) for c in connections)

        finally:
            for connection in connections:
                connection.close()

    assert closed == WORKERS + WAITING
