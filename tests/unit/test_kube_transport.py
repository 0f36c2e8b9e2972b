"""k8sailor's own session to the API server (server.kube.transport): what it sends, that a
lost answer is Kube's to retry and never aiohttp's, and that the tracing hooks given to it act
only while a sampled span is current, and that the Configuration's TLS settings decide which
server certificates it accepts."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from kubernetes_asyncio import client
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from server.kube.errors import KubeUnavailable
from server.kube.transport import AnswerLost, Transport
from server.observability.tracing import api_call_trace_config
from tests.pki import CertificateAuthority
from tests.unit.fakeapi import api_client_for, drop


async def test_a_request_carries_the_credentials_and_the_clients_default_headers() -> None:
    seen: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append(
            {"path": request.path_qs, "headers": {k.lower(): v for k, v in request.headers.items()}}
        )
        return web.json_response({}, status=200)

    async with api_client_for(handle) as api:
        api.configuration.api_key = {"BearerToken": "Bearer secret"}
        transport = Transport(api.configuration, headers=api.default_headers)
        try:
            query = [("fieldManager", "k8sailor"), ("force", "true")]
            async with await transport.request("GET", "/api/v1/x", query=query, timeout=5):
                pass
        finally:
            await transport.close()
    [request] = seen
    assert request["path"] == "/api/v1/x?fieldManager=k8sailor&force=true"
    assert request["headers"]["authorization"] == "Bearer secret"
    assert request["headers"]["user-agent"] == api.default_headers["User-Agent"]
    assert request["headers"]["accept"] == "application/json"


async def test_a_dropped_answer_on_a_pooled_connection_is_not_sent_again_by_aiohttp() -> None:
    """aiohttp would quietly send a GET again after a pooled connection dropped; here the
    failure comes back at once, as AnswerLost, for Kube to count and decide on."""
    requests = 0

    async def handle(request: web.Request) -> web.StreamResponse:
        nonlocal requests
        requests += 1
        if requests == 1:
            return web.json_response({})  # keeps the connection, for the next request
        return await drop(request)

    async with api_client_for(handle) as api:
        transport = Transport(api.configuration)
        try:
            async with await transport.request("GET", "/api/v1/x", timeout=5):
                pass
            with pytest.raises(AnswerLost):
                await transport.request("GET", "/api/v1/x", timeout=5)
        finally:
            await transport.close()
    assert requests == 2


async def test_a_call_through_kube_whose_answer_was_lost_may_have_applied() -> None:
    from server.kube import NO_RETRIES, Kube

    async with api_client_for(drop) as api:
        kube = Kube(api, max_in_flight=1, retry=NO_RETRIES)
        try:
            with pytest.raises(KubeUnavailable) as raised:
                await kube.read_service("ns", "web", timeout=5)
        finally:
            await kube.close()
    assert raised.value.may_have_applied


async def test_the_trace_config_makes_spans_only_under_a_recording_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    carried: list[str | None] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        carried.append(request.headers.get("traceparent"))
        return web.json_response({})

    async with api_client_for(handle) as api:
        transport = Transport(api.configuration, trace_configs=[api_call_trace_config(provider)])
        try:
            async with await transport.request("GET", "/unsampled", timeout=5):
                pass
            with provider.get_tracer("test").start_as_current_span("request"):
                assert trace.get_current_span().is_recording()
                async with await transport.request("GET", "/sampled", timeout=5):
                    pass
        finally:
            await transport.close()
    assert carried[0] is None
    assert carried[1] is not None
    assert sorted(span.name for span in exporter.get_finished_spans()) == ["GET", "request"]


@pytest.fixture
async def https_server(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """An HTTPS server on 127.0.0.1 with a certificate of a throwaway CA that nothing trusts
    by default: its URL, and the CA's certificate file."""
    authority = CertificateAuthority("test-apiserver-ca")
    cert, key = authority.issue(common_name="apiserver", server=True).write(tmp_path, "server")
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(authority.pem)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)

    async def handle(request: web.Request) -> web.StreamResponse:
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=served)
    await site.start()
    try:
        yield f"https://127.0.0.1:{runner.addresses[0][1]}", ca_file
    finally:
        await runner.cleanup()


async def _status(configuration: client.Configuration) -> int:
    transport = Transport(configuration)
    try:
        async with await transport.request("GET", "/version", timeout=5) as response:
            return response.status
    finally:
        await transport.close()


async def test_the_configuration_decides_tls(https_server: tuple[str, Path]) -> None:
    """The server's certificate is checked against the Configuration's CA file, and not at all
    with verify_ssl off; without either, a certificate of an unknown CA is refused."""
    url, ca_file = https_server
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await _status(client.Configuration(host=url))
    trusting = client.Configuration(host=url)
    trusting.ssl_ca_cert = str(ca_file)
    assert await _status(trusting) == 200
    unchecked = client.Configuration(host=url)
    unchecked.verify_ssl = False
    assert await _status(unchecked) == 200
