"""An HTTPS proxy in front of the fault tests' own API server that answers for it on demand.

The real API server cannot be made to turn away a given create, drop a connection or go away
for exactly three seconds, so this proxy sits in front of it: it serves TLS with the API
server's own certificate (k8sailor's kubeconfig only points at another port), passes every
request on as the admin (whom the API server never throttles), and injects the faults it is
told to. Each Service create or delete can be answered 429 or 503 for the API server, have
its connection dropped before it is passed on, or be passed on (and so done) with its answer
lost; and the whole port can go away (connections refused, open ones dropped) and come back. It
remembers the Services whose 201 it lost: the only ones a retry then finds already there.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

import aiohttp
from aiohttp import web

Fault = Literal["429", "503", "drop", "lose"]
FAULTS: tuple[Fault, ...] = ("429", "503", "drop", "lose")

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


def _status(code: int, reason: str, message: str) -> dict[str, object]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "reason": reason, "code": code}  # fmt: skip


class ApiProxy:
    def __init__(self, upstream: str, session: aiohttp.ClientSession) -> None:
        self.upstream, self.session = upstream, session
        # Decides what happens to each Service create or delete: called with the verb
        # ("create", "delete") and the Service's name.
        self.fault: Callable[[str, str], Fault | None] = lambda verb, name: None
        self.faults: Counter[Fault] = Counter()
        # Services the API server created whose 201 never reached k8sailor.
        self.lost: set[str] = set()
        self.down = False
        self._transports: set[asyncio.BaseTransport] = set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        assert transport is not None
        if self.down:  # accepted just before the port went away
            transport.close()
            return web.Response()
        self._transports.add(transport)
        body = await request.read()
        verb, name = "", ""
        if request.method == "POST" and request.path.endswith("/services"):
            verb, name = "create", json.loads(body)["metadata"]["name"]
        elif request.method == "DELETE" and "/services/" in request.path:
            verb, name = "delete", request.path.rpartition("/")[2]
        fault = self.fault(verb, name) if verb else None
        if fault is not None:
            self.faults[fault] += 1
        if fault == "429":
            return web.json_response(
                _status(429, "TooManyRequests", "Too many requests, please try again later."),
                status=429, headers={"Retry-After": "1"},
            )  # fmt: skip
        if fault == "503":
            return web.json_response(
                _status(503, "ServiceUnavailable", "the server is currently unable to handle "
                        "the request"), status=503,
            )  # fmt: skip
        if fault == "drop":
            transport.close()
            return web.Response()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers.pop("Authorization", None)  # the proxy speaks as the admin, by certificate
        async with self.session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body
        ) as answer:
            answer_body = await answer.read()
        # The port went away while the API server worked on it: the answer goes nowhere.
        gone = fault == "lose" or transport.is_closing()
        if gone:
            if verb == "create" and answer.status == 201:
                self.lost.add(name)
            transport.close()
            return web.Response()
        return web.Response(
            status=answer.status,
            body=answer_body,
            headers={k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP},
        )

    def drop_connections(self) -> None:
        for transport in self._transports:
            transport.close()
        self._transports.clear()


class RunningProxy:
    """An ApiProxy serving on a port of its own, which can go away and come back."""

    def __init__(self, proxy: ApiProxy, runner: web.AppRunner, tls: ssl.SSLContext) -> None:
        self.proxy, self._runner, self._tls = proxy, runner, tls
        self._site: web.TCPSite | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self._tls)
        await self._site.start()
        self.port = self._site.port

    async def outage(self, seconds: float) -> None:
        """For `seconds`, as while an API server restarts: the port refuses connections,
        the open ones are dropped, and answers still on their way are lost."""
        assert self._site is not None
        self.proxy.down = True
        await self._site.stop()
        self.proxy.drop_connections()
        await asyncio.sleep(seconds)
        self.proxy.down = False
        await self.start()


@asynccontextmanager
async def api_proxy(upstream: str, pki: Path) -> AsyncIterator[RunningProxy]:
    """A running ApiProxy in front of upstream, whose certificates are in pki."""
    upstream_tls = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    upstream_tls.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    serving_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    serving_tls.load_cert_chain(str(pki / "apiserver.crt"), str(pki / "apiserver.key"))
    connector = aiohttp.TCPConnector(ssl=upstream_tls, limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:
        proxy = ApiProxy(upstream, session)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", proxy.handle)
        # Handlers still running at the end (a watch, passed on and never over) are given a
        # second, not aiohttp's minute.
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        await runner.setup()
        running = RunningProxy(proxy, runner, serving_tls)
        try:
            await running.start()
            yield running
        finally:
            await runner.cleanup()
