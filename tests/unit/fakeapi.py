"""A small aiohttp server on 127.0.0.1 that answers as the API server does (metav1.Status
bodies), for what the real API server cannot be made to do on demand: a 500, a 503 with
retryAfterSeconds, a dropped connection, a request that never gets an answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from kubernetes_asyncio import client

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class FakeApiServer:
    """Answers each path with whatever the test set; 404 with a Status body otherwise."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Handler] = {}
        # Set at teardown, so handlers that hang on purpose let the server shut down.
        self.released = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        handler = self.routes.get((request.method, request.path))
        if handler is None:
            body = status_body(404, "NotFound", f"{request.path} not found")
            return web.json_response(body, status=404)
        return await handler(request)


@asynccontextmanager
async def api_client_for(handle: Handler) -> AsyncIterator[client.ApiClient]:
    """An aiohttp server on 127.0.0.1 that answers every request with handle, and an ApiClient
    pointed at it; both stop when the block ends."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    api = client.ApiClient(client.Configuration(host=f"http://127.0.0.1:{port}"))
    try:
        yield api
    finally:
        await api.close()
        await runner.cleanup()


@asynccontextmanager
async def fake_api_server() -> AsyncIterator[tuple[FakeApiServer, client.ApiClient]]:
    """A FakeApiServer, and an ApiClient pointed at it."""
    fake = FakeApiServer()
    async with api_client_for(fake.handle) as api:
        try:
            yield fake, api
        finally:
            fake.released.set()


def answer(code: int, reason: str, message: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response(status_body(code, reason, message), status=code)

    return handler


async def drop(request: web.Request) -> web.StreamResponse:
    assert request.transport is not None
    request.transport.close()  # the connection goes away without an answer
    return web.Response()
