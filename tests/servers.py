"""A k8sailor server of a test's own, for tests that need one with another API client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from kubernetes_asyncio import client

from client import Client, connect
from server.app import ServerConfig, serving
from server.kube import CallObserver


@asynccontextmanager
async def k8sailor_over(
    api: client.ApiClient, observer: CallObserver | None = None
) -> AsyncIterator[Client]:
    """A real grpc.aio server on a free port that talks to the cluster through `api`, and a
    client connected to it through a real channel; both stop when the block ends. observer,
    if given, sees every call the server makes to the API server."""
    async with (
        serving(api, ServerConfig(listen="127.0.0.1:0"), observer=observer) as running,
        connect(f"127.0.0.1:{running.port}") as connected,
    ):
        yield connected
