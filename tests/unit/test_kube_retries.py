"""How Kube tries again: what it retries, how long it waits, and where it stops.

Throttling, restarts and stalls are tested on the real API server in tests/faults; these are
the answers it cannot be made to give on demand (a 503 with retryAfterSeconds, a 500, a
Retry-After beyond the deadline, one hung request), from a fake over real HTTP.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from kubernetes_asyncio import client

from server.errors import KubeServerError, KubeUnavailable, from_response
from server.kube import Kube, RetryPolicy
from tests.faults.observers import RecordingObserver
from tests.unit.fakeapi import FakeApiServer, Handler, fake_api_server, status_body

SERVICES = "/api/v1/namespaces/ns/services"
QUICK = RetryPolicy(attempts=4, first_backoff=0.01, max_backoff=0.02)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeApiServer, client.ApiClient]]:
    async with fake_api_server() as running:
        yield running


class Script:
    """Answers a route's requests in turn from a list of (status, Status details, headers),
    then 201 with the object sent; remembers when each request arrived (loop time)."""

    def __init__(self, *answers: tuple[int, dict[str, object], dict[str, str]]) -> None:
        self.answers = list(answers)
        self.arrivals: list[float] = []

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        self.arrivals.append(asyncio.get_running_loop().time())
        body = await request.json()
        if not self.answers:
            return web.json_response(body, status=201)
        code, details, headers = self.answers.pop(0)
        status = {**status_body(code, "", f"answer {code}"), "details": details}
        status.pop("reason")
        return web.json_response(status, status=code, headers=headers)


def manifest(name: str = "a") -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}}


async def test_a_503_waits_as_long_as_retry_after_seconds_says(
    fake: tuple[FakeApiServer, client.ApiClient],
) -> None:
    server, api = fake
    script = Script((503, {"retryAfterSeconds": 1}, {}))
    server.routes["POST", SERVICES] = script
    observer = RecordingObserver()
    kube = Kube(api, max_in_flight=4, observer=observer, retry=QUICK)
    assert await kube.create_service("ns", manifest(), dry_run=False, timeout=10) == manifest()
    assert observer.codes() == {"503": 1, "201": 1}
    assert observer.retry_reasons() == {"ServiceUnavailable": 1}
    assert script.arrivals[1] - script.arrivals[0] >= 1.0  # never sooner than asked


async def test_a_retry_after_beyond_the_deadline_gives_up_at_once(
    fake: tuple[FakeApiServer, client.ApiClient],
) -> None:
    server, api = fake
    server.routes["POST", SERVICES] = Script((429, {}, {"Retry-After": "30"}))
    observer = RecordingObserver()
    kube = Kube(api, max_in_flight=4, observer=observer, retry=QUICK)
    with pytest.raises(KubeUnavailable) as raised:
        await kube.create_service("ns", manifest(), dry_run=False, timeout=2)
    assert (raised.value.reason, raised.value.retry_after) == ("TooManyRequests", 30.0)
    assert observer.codes() == {"429": 1}
    assert observer.retried == []


async def test_attempts_are_bounded(fake: tuple[FakeApiServer, client.ApiClient]) -> None:
    server, api = fake
    server.routes["POST", SERVICES] = Script(*[(503, {}, {})] * 10)
    observer = RecordingObserver()
    kube = Kube(api, max_in_flight=4, observer=observer, retry=QUICK)
    with pytest.raises(KubeUnavailable, match="answer 503"):
        await kube.create_service("ns", manifest(), dry_run=False, timeout=10)
    assert observer.codes() == {"503": 4}
    assert len(observer.retried) == 3


@pytest.mark.parametrize(
    ("headers", "attempts"),
    [({}, 1), ({"Retry-After": "0"}, 2)],
    ids=["500 is the API server's decision", "500 that says when is retried"],
)
async def test_a_500_is_retried_only_when_it_says_when(
    fake: tuple[FakeApiServer, client.ApiClient], headers: dict[str, str], attempts: int
) -> None:
    server, api = fake
    server.routes["POST", SERVICES] = Script((500, {}, headers), (500, {}, {}))
    observer = RecordingObserver()
    kube = Kube(api, max_in_flight=4, observer=observer, retry=QUICK)
    with pytest.raises(KubeServerError):
        await kube.create_service("ns", manifest(), dry_run=False, timeout=10)
    assert observer.codes() == {"500": attempts}


async def test_a_call_waiting_to_retry_does_not_hold_its_slot(
    fake: tuple[FakeApiServer, client.ApiClient],
) -> None:
    server, api = fake
    arrivals: list[str] = []
    first = asyncio.Event()

    async def create(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        name = body["metadata"]["name"]
        arrivals.append(name)
        first.set()
        if arrivals.count(name) == 1 and name == "throttled":
            return web.json_response(status_body(429, "TooManyRequests", "wait"), status=429,
                                     headers={"Retry-After": "1"})  # fmt: skip
        return web.json_response(body, status=201)

    server.routes["POST", SERVICES] = create
    kube = Kube(api, max_in_flight=1, retry=QUICK)  # one slot for both calls
    throttled = asyncio.create_task(
        kube.create_service("ns", manifest("throttled"), dry_run=False, timeout=10)
    )
    await first.wait()
    await kube.create_service("ns", manifest("other"), dry_run=False, timeout=10)
    await throttled
    # The other call went through while the throttled one waited out its second.
    assert arrivals == ["throttled", "other", "throttled"]


async def test_an_attempt_without_an_answer_is_abandoned_and_tried_again(
    fake: tuple[FakeApiServer, client.ApiClient],
) -> None:
    server, api = fake
    seen = 0

    async def create(request: web.Request) -> web.StreamResponse:
        nonlocal seen
        seen += 1
        if seen == 1:
            await server.released.wait()  # the first one never gets an answer
        return web.json_response(await request.json(), status=201)

    handler: Handler = create
    server.routes["POST", SERVICES] = handler
    observer = RecordingObserver()
    policy = RetryPolicy(attempts=3, first_backoff=0.01, max_backoff=0.02, attempt_timeout=0.5)
    kube = Kube(api, max_in_flight=4, observer=observer, retry=policy)
    assert await kube.create_service("ns", manifest(), dry_run=False, timeout=20) == manifest()
    assert [code for _, _, code in observer.finished] == ["timeout", "201"]
    assert observer.retry_reasons() == {"Timeout": 1}


@pytest.mark.parametrize(
    ("details", "headers", "expected"),
    [
        ({"retryAfterSeconds": 3}, {"Retry-After": "9"}, 3.0),  # the Status wins
        ({}, {"Retry-After": "2"}, 2.0),
        ({}, {"Retry-After": "1.5"}, 1.5),
        ({}, {"Retry-After": "-4"}, 0.0),
        ({}, {"Retry-After": "99999"}, 600.0),  # capped: nobody waits a day
        ({}, {"Retry-After": "soon"}, None),
        ({}, {"Retry-After": "nan"}, None),
        ({"retryAfterSeconds": True}, {}, None),  # not a number, whatever JSON says
        ({"retryAfterSeconds": 0}, {}, None),
        ({}, {}, None),
    ],
)
def test_when_to_ask_again_is_read_from_the_status_then_the_header(
    details: dict[str, object], headers: dict[str, str], expected: float | None
) -> None:
    body = {**status_body(429, "TooManyRequests", "slow down"), "details": details}
    assert from_response(429, json_bytes(body), headers).retry_after == expected


def test_retry_after_may_be_an_http_date() -> None:
    later = email.utils.formatdate(time.time() + 120, usegmt=True)
    retry_after = from_response(503, b"", {"Retry-After": later}).retry_after
    assert retry_after is not None
    assert 100 < retry_after <= 120


def test_the_pause_is_at_least_what_was_asked_and_grows_with_jitter() -> None:
    policy = RetryPolicy(first_backoff=0.2, max_backoff=5.0)
    for attempt, (low, high) in enumerate([(0.1, 0.2), (0.2, 0.4), (0.4, 0.8)], start=1):
        assert all(low <= policy.pause(attempt, None) <= high for _ in range(50))
    assert all(2.5 <= policy.pause(10, None) <= 5.0 for _ in range(50))
    assert all(1.0 <= policy.pause(1, 1.0) <= 2.0 for _ in range(50))
    assert all(1.0 <= policy.pause(5, 1.0) <= 4.2 for _ in range(50))


@pytest.mark.parametrize(
    "arguments",
    [{"attempts": 0}, {"first_backoff": -1.0}, {"first_backoff": 9.0}, {"attempt_timeout": 0.0}],
)
def test_a_policy_that_cannot_work_is_refused(arguments: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        RetryPolicy(**arguments)  # type: ignore[arg-type]


def json_bytes(value: object) -> bytes:
    return json.dumps(value).encode()
