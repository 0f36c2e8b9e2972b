"""A create or delete whose answer is lost after the API server did it: k8sailor sends it
again, and reports what its first attempt did (a create finds its Service already there,
reads and compares it: UNCHANGED; a delete finds nothing left: DELETED, not NOT_FOUND).

The real API server cannot be made to lose an answer, so an HTTP proxy of the test's own sits
in front of it: it serves TLS with the API server's own certificate, passes every request on
(as the admin), and for the creates and deletes it is told to, drops the connection instead
of answering."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from client import Outcome
from server.kube import load_api_client
from tests.faults.conftest import FaultPlane
from tests.faults.identity import through
from tests.faults.observers import RecordingObserver
from tests.servers import k8sailor_over

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class AnswerLosingProxy:
    def __init__(self, upstream: str, session: aiohttp.ClientSession) -> None:
        self.upstream, self.session = upstream, session
        self.lose_creates = 0  # how many more Service creates to pass on and not answer
        self.lose_deletes = 0  # and deletes
        self.lost = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers.pop("Authorization", None)  # the proxy speaks as the admin, by certificate
        async with self.session.request(
            request.method, self.upstream + request.path_qs, headers=headers,
            data=await request.read(),
        ) as answer:  # fmt: skip
            body = await answer.read()
            creating = request.method == "POST" and request.path.endswith("/services")
            deleting = request.method == "DELETE" and "/services/" in request.path
            if creating and answer.status == 201 and self.lose_creates > 0:
                self.lose_creates -= 1
                return self._lose(request)
            if deleting and answer.status == 200 and self.lose_deletes > 0:
                self.lose_deletes -= 1
                return self._lose(request)
            return web.Response(
                status=answer.status,
                body=body,
                headers={k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP},
            )

    def _lose(self, request: web.Request) -> web.StreamResponse:
        """Done, and the answer goes nowhere: the connection drops instead."""
        self.lost += 1
        assert request.transport is not None
        request.transport.close()
        return web.Response()


@pytest.fixture
async def proxy(fault_plane: FaultPlane) -> AsyncIterator[tuple[AnswerLosingProxy, str]]:
    pki = fault_plane.plane.data_dir / "pki"
    upstream_tls = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    upstream_tls.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    serving_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    serving_tls.load_cert_chain(str(pki / "apiserver.crt"), str(pki / "apiserver.key"))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=upstream_tls)) as session:
        proxy = AnswerLosingProxy(fault_plane.plane.server, session)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", proxy.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=serving_tls)
        await site.start()
        try:
            yield proxy, f"https://127.0.0.1:{runner.addresses[0][1]}"
        finally:
            await runner.cleanup()


async def test_a_create_sent_again_after_its_answer_was_lost_is_unchanged(
    fault_plane: FaultPlane,
    fault_namespace: str,
    proxy: tuple[AnswerLosingProxy, str],
    tmp_path: Path,
) -> None:
    losing, address = proxy
    losing.lose_creates = 5
    kubeconfig = through(fault_plane.plane.kubeconfig, tmp_path, address)
    observer = RecordingObserver()
    api = await load_api_client(str(kubeconfig), None, pool_size=8)
    rules = [f"lost{index}=80:8088" for index in range(5)]
    async with api, k8sailor_over(api, observer) as k8sailor:
        results = [
            r
            async for r in k8sailor.create_services(
                "web", rules, namespace=fault_namespace, timeout=60
            )
        ]

    assert losing.lost == 5
    assert sorted(result.index for result in results) == list(range(5))
    # Each Service was made by the first attempt; the second found it, as k8sailor makes it.
    assert {result.outcome for result in results} == {Outcome.UNCHANGED}
    assert all(result.cluster_ip for result in results)
    assert observer.retry_reasons() == {"Unreachable": 5}
    assert observer.codes()["409"] == 5


async def test_a_delete_sent_again_after_its_answer_was_lost_is_deleted(
    fault_plane: FaultPlane,
    fault_namespace: str,
    proxy: tuple[AnswerLosingProxy, str],
    tmp_path: Path,
) -> None:
    losing, address = proxy
    kubeconfig = through(fault_plane.plane.kubeconfig, tmp_path, address)
    observer = RecordingObserver()
    api = await load_api_client(str(kubeconfig), None, pool_size=8)
    async with api, k8sailor_over(api, observer) as k8sailor:
        created = [
            r async for r in k8sailor.create_services("web", ["gone=80"], namespace=fault_namespace)
        ]
        assert [result.outcome for result in created] == [Outcome.CREATED]
        losing.lose_deletes = 1
        deleted = [
            d
            async for d in k8sailor.delete_services(
                "web", ["gone"], namespace=fault_namespace, timeout=60
            )
        ]
    assert losing.lost == 1
    # The first attempt deleted it; the second found nothing: this call's own doing.
    assert [(d.service_name, d.outcome) for d in deleted] == [("gone", Outcome.DELETED)]
    assert [code for verb, _, code in observer.finished if verb == "delete"] == ["error", "404"]
    assert observer.retry_reasons() == {"Unreachable": 1}


async def test_an_apply_whose_create_lost_its_answer_reports_the_service_created(
    fault_plane: FaultPlane,
    fault_namespace: str,
    proxy: tuple[AnswerLosingProxy, str],
    tmp_path: Path,
) -> None:
    losing, address = proxy
    losing.lose_creates = 1
    kubeconfig = through(fault_plane.plane.kubeconfig, tmp_path, address)
    observer = RecordingObserver()
    api = await load_api_client(str(kubeconfig), None, pool_size=8)
    async with api, k8sailor_over(api, observer) as k8sailor:
        applied = [
            r
            async for r in k8sailor.apply_services(
                "web", ["lost=80:8088"], namespace=fault_namespace, timeout=60
            )
        ]

    assert losing.lost == 1
    # The first attempt made it; the second found it there, read it and saw it is ours: the
    # caller is told of the Service this call created, not of an unchanged one.
    assert [(r.service_name, r.outcome) for r in applied] == [("lost", Outcome.CREATED)]
    assert [code for verb, _, code in observer.finished if verb == "create"] == ["error", "409"]
