"""The Deployment cache's list-and-watch loop against answers the real API server gives only
after long disconnections or failures: 410 Gone (inside the stream and as the answer itself),
a 500, a dropped stream. A small aiohttp server on 127.0.0.1 plays the API server, over real
HTTP; everything the real API server can be made to do is tested in tests/e2e."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio import client

from server.kube import Kube
from server.kube.deployments import Backoff, DeploymentCache, WatchSettings
from tests import objects
from tests.unit.fakeapi import api_client_for

DEPLOYMENTS = "/apis/apps/v1/namespaces/ns/deployments"
SETTINGS = WatchSettings(backoff=Backoff(first=0.01, most=0.02))
GUARD_S = 30.0  # against a hang; nothing here waits on a clock otherwise


async def as_json(deployment: client.V1Deployment) -> dict[str, Any]:
    """The Deployment as the API server sends it. ApiClient() opens an aiohttp session of its
    own, even for a serializer: closed here."""
    async with client.ApiClient() as serializer:
        body: dict[str, Any] = serializer.sanitize_for_serialization(deployment)
    return body


async def manifest(name: str, uid: str, version: str) -> dict[str, Any]:
    body = await as_json(objects.deployment(name, {"app": name}, [("http", 8080, "TCP")]))
    body["metadata"] |= {"namespace": "ns", "uid": uid, "resourceVersion": version}
    return body


def event(kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


def gone() -> dict[str, Any]:
    return {"kind": "Status", "status": "Failure", "reason": "Expired", "code": 410,
            "message": "too old resource version"}  # fmt: skip


class Script:
    """The fake API server: lists answer from `pages`, each watch plays the next entry of
    `watches` (a status code, or lines to stream, then the stream stays open until released)."""

    def __init__(self) -> None:
        self.lists: list[dict[str, Any]] = []
        self.pages: list[dict[str, Any]] = []
        self.watches: list[int | list[bytes]] = []
        self.watched_from: list[str] = []
        self.released = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path != DEPLOYMENTS:
            return web.json_response({"code": 404}, status=404)
        if request.query.get("watch", "").lower() != "true":
            self.lists.append(dict(request.query))
            return web.json_response(self.pages[min(len(self.lists), len(self.pages)) - 1])
        self.watched_from.append(request.query.get("resourceVersion", ""))
        assert request.query.get("allowWatchBookmarks", "").lower() == "true"
        play = self.watches.pop(0) if self.watches else []
        if isinstance(play, int):
            return web.json_response(gone() | {"code": play}, status=play)
        response = web.StreamResponse()
        await response.prepare(request)
        for line in play:
            await response.write(line)
        await self.released.wait()
        return response


@pytest.fixture
async def script() -> AsyncIterator[tuple[Script, Kube]]:
    played = Script()
    async with api_client_for(played.handle) as api:
        try:
            async with Kube(api, max_in_flight=4) as kube:
                yield played, kube
        finally:
            played.released.set()


def page(version: str, *items: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "DeploymentList",
        "metadata": {"resourceVersion": version},
        "items": list(items),
    }


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(GUARD_S):
        # The cache offers no event per change, so this polls its state.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def test_gone_in_the_stream_lists_again_and_watches_from_the_new_list(
    script: tuple[Script, Kube],
) -> None:
    played, kube = script
    played.pages = [
        page("10", await manifest("old", "u-old", "9")),
        page("20", await manifest("new", "u-new", "19")),
    ]
    played.watches = [
        [event("ERROR", gone())],
        [event("BOOKMARK", {"metadata": {"resourceVersion": "25"}})],
    ]
    cache = DeploymentCache(kube, ["ns"], SETTINGS)
    await cache.start()
    try:
        await until(lambda: cache.lists == 2 and cache.synced)
        assert played.watched_from == ["10", "20"]
        assert cache.peek("ns", "old") is None  # the new list replaced the old entries
        found = cache.peek("ns", "new")
        assert found is not None
        assert found.uid == "u-new"
    finally:
        await cache.stop()


async def test_gone_as_the_answer_lists_again(script: tuple[Script, Kube]) -> None:
    played, kube = script
    played.pages = [page("10"), page("30")]
    played.watches = [410, []]
    cache = DeploymentCache(kube, ["ns"], SETTINGS)
    await cache.start()
    try:
        await until(lambda: cache.lists == 2 and cache.synced)
        assert played.watched_from == ["10", "30"]
    finally:
        await cache.stop()


async def test_events_change_the_cache_and_bookmarks_move_the_resume_point(
    script: tuple[Script, Kube],
) -> None:
    played, kube = script
    played.pages = [page("10", await manifest("web", "u1", "9"))]
    first_watch = [
        event("DELETED", await manifest("web", "u1", "11")),
        event("ADDED", await manifest("web", "u2", "12")),
        event("BOOKMARK", {"metadata": {"resourceVersion": "40"}}),
    ]
    # The first stream ends (the API server's timeout): the next watch resumes from 40.
    played.watches = [first_watch]
    cache = DeploymentCache(kube, ["ns"], SETTINGS)
    await cache.start()
    try:
        await until(lambda: (found := cache.peek("ns", "web")) is not None and found.uid == "u2")
        played.released.set()
        await until(lambda: len(played.watched_from) >= 2)
        assert played.watched_from[:2] == ["10", "40"]
        assert cache.lists == 1
    finally:
        await cache.stop()


async def test_a_failing_list_is_tried_again_and_requests_are_not_answered_meanwhile(
    script: tuple[Script, Kube],
) -> None:
    played, kube = script
    failing = {"kind": "Status", "code": 500}
    played.pages = [failing]  # no resourceVersion: unusable, as a 500 would be
    cache = DeploymentCache(kube, ["ns"], SETTINGS)
    await cache.start()
    try:
        await until(lambda: len(played.lists) >= 3)
        assert not cache.synced
        assert cache.peek("ns", "web") is None
        played.pages = [failing, page("10", await manifest("web", "u1", "9"))]
        await until(lambda: cache.synced)
        assert cache.peek("ns", "web") is not None
    finally:
        await cache.stop()


async def huge(name: str) -> bytes:
    """A Deployment of about the most the API server stores (1.5 MiB of JSON), all named
    container ports, as a tenant with no k8sailor rights may create it (replicas 0)."""
    body = await as_json(
        objects.deployment(
            name, {"app": name}, [(f"p{i}", 1 + i % 65535, "TCP") for i in range(26_500)]
        )
    )
    body["spec"]["replicas"] = 0
    body["metadata"] |= {"namespace": "ns", "uid": f"u-{name}", "resourceVersion": "9"}
    return json.dumps(body, separators=(",", ":")).encode()


def decoded_size(raw: bytes) -> int:
    """Bytes that decoding raw allocates and keeps, as a list page's items are kept while the
    page is read."""
    tracemalloc.start()
    try:
        decoded = json.loads(raw)
        size, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del decoded
    return size


# What one list page may cost at most: a page is read and decoded whole.
PAGE_BUDGET = 64 * 2**20


async def test_a_list_of_huge_deployments_reads_pages_of_bounded_size() -> None:
    """The first list reads every Deployment, a page at a time: however big the Deployments
    (a tenant with no k8sailor rights decides that), a page stays within PAGE_BUDGET, well
    under the pod's 256 MiB (deploy/), and none of them is kept whole."""
    items = [await huge(f"d{i}") for i in range(12)]
    assert 1.4 * 2**20 < len(items[0]) < 1.5 * 2**20
    limits: list[int] = []
    done = asyncio.Event()

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.query.get("watch", "").lower() == "true":
            response = web.StreamResponse()
            await response.prepare(request)
            await done.wait()  # a quiet watch, until the test is over
            return response
        # Pages as the API server cuts them: `limit` items, then a continue token.
        limit = int(request.query["limit"])
        start = int(request.query.get("continue") or 0)
        limits.append(limit)
        end = min(start + limit, len(items))
        meta = {"resourceVersion": "10"} | ({"continue": str(end)} if end < len(items) else {})
        head = json.dumps({"kind": "DeploymentList", "metadata": meta}).encode()
        body = head[:-1] + b',"items":[' + b",".join(items[start:end]) + b"]}"
        return web.Response(body=body, content_type="application/json")

    async with api_client_for(handle) as api, Kube(api, max_in_flight=4) as kube:
        cache = DeploymentCache(kube, ["ns"])
        await cache.start()
        try:
            await asyncio.wait_for(cache.wait_synced(), GUARD_S)
        finally:
            await cache.stop()
            done.set()
    # All read, each too big to keep (a GET reads it when asked).
    assert (cache.size, cache.oversized) == (0, len(items))
    # The biggest page the cache asks for, of the biggest Deployments: its body and what
    # decoding it keeps until the page is done.
    per_item = len(items[0]) + decoded_size(items[0])
    assert max(limits) * per_item <= PAGE_BUDGET, (
        f"pages of {max(limits)} cost up to {max(limits) * per_item / 2**20:.0f} MiB"
    )


def test_backoff_doubles_up_to_its_most_with_jitter() -> None:
    pauses = Backoff(first=1.0, most=4.0).pauses()
    taken = [next(pauses) for _ in range(5)]
    for pause, base in zip(taken, [1, 2, 4, 4, 4], strict=True):
        assert 0.8 * base <= pause <= 1.2 * base
