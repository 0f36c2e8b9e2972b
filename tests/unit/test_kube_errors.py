"""What the API server says on failure, and what k8sailor makes of it.

The real API server can't be made to answer 500, 503 or drop a connection on demand, so these
cases run against a small aiohttp server on 127.0.0.1 that answers as the API server does
(a metav1.Status body). The adapter is exercised over real HTTP, not by patching the client.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import grpc
import pytest
from aiohttp import web
from kubernetes_asyncio import client

from client import Outcome, RequestFailed
from server.kube import NO_RETRIES, Kube
from server.kube.errors import (
    KubeAlreadyExists,
    KubeConflict,
    KubeError,
    KubeForbidden,
    KubeInvalid,
    KubeNotFound,
    KubeServerError,
    KubeUnauthorized,
    KubeUnavailable,
)
from tests import objects
from tests.servers import k8sailor_over
from tests.unit.fakeapi import FakeApiServer, answer, drop, fake_api_server, status_body


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeApiServer, client.ApiClient]]:
    async with fake_api_server() as running:
        yield running


SERVICES = "/api/v1/namespaces/ns/services"
DEPLOYMENT = "/apis/apps/v1/namespaces/ns/deployments/web"


@pytest.mark.parametrize(
    ("code", "reason", "kind"),
    [
        (400, "BadRequest", KubeInvalid),
        (401, "Unauthorized", KubeUnauthorized),
        (403, "Forbidden", KubeForbidden),
        (404, "NotFound", KubeNotFound),
        (409, "AlreadyExists", KubeAlreadyExists),
        (409, "Conflict", KubeConflict),
        (422, "Invalid", KubeInvalid),
        (429, "TooManyRequests", KubeUnavailable),
        (500, "InternalError", KubeServerError),
        (503, "ServiceUnavailable", KubeUnavailable),
        (504, "Timeout", KubeUnavailable),
    ],
)
async def test_each_status_becomes_our_error_with_the_servers_words(
    fake: tuple[FakeApiServer, client.ApiClient], code: int, reason: str, kind: type[KubeError]
) -> None:
    server, api = fake
    server.routes["POST", SERVICES] = answer(code, reason, f"the server says {code}")
    async with Kube(api, max_in_flight=4, retry=NO_RETRIES) as kube:
        with pytest.raises(KubeError) as raised:
            await kube.create_service("ns", {}, dry_run=False, timeout=5)
    assert type(raised.value) is kind
    assert (raised.value.status, raised.value.reason) == (code, reason)
    assert raised.value.message.endswith(f"the server says {code}")
    assert raised.value.api_status.message == f"the server says {code}"


async def test_an_answer_without_a_status_body_keeps_the_text(
    fake: tuple[FakeApiServer, client.ApiClient],
) -> None:
    server, api = fake

    async def plain(request: web.Request) -> web.StreamResponse:
        return web.Response(status=502, text="bad gateway from a proxy")

    server.routes["POST", SERVICES] = plain
    async with Kube(api, max_in_flight=4, retry=NO_RETRIES) as kube:
        with pytest.raises(KubeServerError, match="HTTP 502: bad gateway from a proxy"):
            await kube.create_service("ns", {}, dry_run=False, timeout=5)


async def test_a_dropped_connection_is_unavailable(
    fake: tuple[FakeApiServer, client.ApiClient],
) -> None:
    server, api = fake
    server.routes["GET", DEPLOYMENT] = drop
    async with Kube(api, max_in_flight=4, retry=NO_RETRIES) as kube:
        with pytest.raises(KubeUnavailable, match="API server unreachable"):
            await kube.read_deployment("ns", "web", timeout=5)


async def test_dry_run_is_sent_as_dry_run_all(
    fake: tuple[FakeApiServer, client.ApiClient],
) -> None:
    server, api = fake
    seen: list[dict[str, str]] = []

    async def created(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.query))
        return web.json_response(await request.json(), status=201)

    server.routes["POST", SERVICES] = created
    manifest = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}}
    async with Kube(api, max_in_flight=4) as kube:
        assert await kube.create_service("ns", manifest, dry_run=True, timeout=5) == manifest
        assert await kube.create_service("ns", manifest, dry_run=False, timeout=5) == manifest
    # Every write names k8sailor as its field manager, so that server-side apply knows them.
    assert seen == [{"dryRun": "All", "fieldManager": "k8sailor"}, {"fieldManager": "k8sailor"}]


async def serve_deployment(request: web.Request) -> web.StreamResponse:
    # ApiClient() opens an aiohttp session of its own, even for a serializer: closed here.
    async with client.ApiClient() as serializer:
        body = serializer.sanitize_for_serialization(
            objects.deployment("web", {"app": "web"}, [("http", 8088, "TCP")])
        )
    body["metadata"].update(namespace="ns", uid="0b5a3e0c-0000-4000-8000-000000000001")
    return web.Response(text=json.dumps(body), content_type="application/json")


async def test_a_500_on_one_create_fails_that_rule_only(
    fake: tuple[FakeApiServer, client.ApiClient],
) -> None:
    server, api = fake
    server.routes["GET", DEPLOYMENT] = serve_deployment

    async def create(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body["metadata"]["name"] == "broken":
            return web.json_response(status_body(500, "InternalError", "etcd hiccup"), status=500)
        body["spec"]["clusterIP"] = "10.96.0.10"
        return web.json_response(body, status=201)

    server.routes["POST", SERVICES] = create
    async with k8sailor_over(api) as k8sailor:
        results = [
            r async for r in k8sailor.create_services("web", ["80", "broken=81"], namespace="ns")
        ]
    by_index = {result.index: result for result in results}
    assert by_index[0].outcome is Outcome.CREATED
    assert by_index[0].cluster_ip == "10.96.0.10"
    assert by_index[1].outcome is Outcome.FAILED
    assert (by_index[1].error, by_index[1].reason) == ("etcd hiccup", "InternalError")


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (403, "Forbidden", grpc.StatusCode.PERMISSION_DENIED),
        (503, "ServiceUnavailable", grpc.StatusCode.UNAVAILABLE),
        (500, "InternalError", grpc.StatusCode.INTERNAL),
    ],
)
async def test_reading_the_deployment_fails_the_request_with_the_fitting_status(
    fake: tuple[FakeApiServer, client.ApiClient],
    code: int,
    reason: str,
    expected: grpc.StatusCode,
) -> None:
    server, api = fake
    server.routes["GET", DEPLOYMENT] = answer(code, reason, "no deployments for you")
    async with k8sailor_over(api) as k8sailor:
        with pytest.raises(RequestFailed) as raised:
            # A deadline, as callers send: a 503 is retried for as long as it leaves room.
            _ = [
                r async for r in k8sailor.create_services("web", ["80"], namespace="ns", timeout=3)
            ]
    assert raised.value.code is expected
    assert "no deployments for you" in raised.value.details


async def test_the_caller_deadline_fails_the_unanswered_rules_and_leaves_no_task(
    fake: tuple[FakeApiServer, client.ApiClient],
) -> None:
    # Only a fake can be made to never answer: the "slow" Services hang until cancelled.
    server, api = fake
    server.routes["GET", DEPLOYMENT] = serve_deployment

    async def create(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body["metadata"]["name"].startswith("slow"):
            await server.released.wait()
        return web.json_response(body, status=201)

    server.routes["POST", SERVICES] = create
    rules = ["80", "slow-a=81", "slow-b=82"]
    async with k8sailor_over(api) as k8sailor:
        results = [
            r async for r in k8sailor.create_services("web", rules, namespace="ns", timeout=1.0)
        ]
        still_running = [
            task for task in asyncio.all_tasks() if "Exposer._create" in repr(task.get_coro())
        ]
    assert still_running == []
    by_index = {result.index: result for result in results}
    assert sorted(by_index) == [0, 1, 2]
    assert by_index[0].outcome is Outcome.CREATED
    for index in (1, 2):
        assert by_index[index].outcome is Outcome.FAILED
        assert by_index[index].reason == "DeadlineExceeded"
        assert by_index[index].error.startswith("deadline exceeded before the API server answered")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_an_answer_larger_than_the_bound_is_refused_unread(
    fake: tuple[FakeApiServer, client.ApiClient], chunked: bool
) -> None:
    server, api = fake
    huge = json.dumps({"metadata": {"name": "x" * 5000}}).encode()

    async def answer_huge(request: web.Request) -> web.StreamResponse:
        if not chunked:
            return web.Response(body=huge, status=200, content_type="application/json")
        response = web.StreamResponse(status=200)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(huge), 1000):
            await response.write(huge[start : start + 1000])
        await response.write_eof()
        return response

    server.routes["GET", DEPLOYMENT] = answer_huge
    async with Kube(api, max_in_flight=4, retry=NO_RETRIES, max_answer_bytes=4096) as kube:
        with pytest.raises(KubeServerError, match="larger than the 4096 bytes") as raised:
            await kube.read_deployment("ns", "web", timeout=5)
    assert raised.value.reason == "AnswerTooLarge"
    # Within the bound, the same answer is read as usual.
    async with Kube(api, max_in_flight=4, retry=NO_RETRIES, max_answer_bytes=len(huge)) as roomy:
        assert await roomy.read_deployment("ns", "web", timeout=5) == json.loads(huge)
