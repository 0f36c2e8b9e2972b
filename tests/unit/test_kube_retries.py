"""How Kube tries again: what it retries, how long it waits, and where it stops.

Throttling, restarts and stalls are tested on the real API server in tests/faults; these are
the answers it cannot be made to give on demand (a 503 with retryAfterSeconds, a 500, a
Retry-After beyond the deadline, one hung request), from a fake over real HTTP.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest
from aiohttp import web
from kubernetes_asyncio import client

from client import RequestFailed
from server.app import ServerConfig
from server.kube import NO_RETRIES, Json, Kube, RetryPolicy
from server.kube.errors import KubeServerError, KubeUnavailable, from_response
from tests.controlplane import free_port
from tests.faults.observers import RecordingObserver
from tests.servers import k8sailor_over
from tests.unit.fakeapi import FakeApiServer, Handler, answer, fake_api_server, status_body

SERVICES = "/api/v1/namespaces/ns/services"
DEPLOYMENT = "/apis/apps/v1/namespaces/ns/deployments/web"
QUICK = RetryPolicy(max_retry_seconds=5, first_backoff=0.01, max_backoff=0.02)


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


@asynccontextmanager
async def serving_on(port: int, handle: Handler) -> AsyncIterator[None]:
    """An aiohttp server answering with handle on 127.0.0.1:port, for the block."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield
    finally:
        await runner.cleanup()


def manifest(name: str = "a") -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}}


async def test_a_503_waits_as_long_as_retry_after_seconds_says(
    fake: tuple[FakeApiServer, client.ApiClient],
) -> None:
    server, api = fake
    script = Script((503, {"retryAfterSeconds": 1}, {}))
    server.routes["POST", SERVICES] = script
    observer = RecordingObserver()
    async with Kube(api, max_in_flight=4, observer=observer, retry=QUICK) as kube:
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
    async with Kube(api, max_in_flight=4, observer=observer, retry=QUICK) as kube:
        with pytest.raises(KubeUnavailable) as raised:
            await kube.create_service("ns", manifest(), dry_run=False, timeout=2)
    assert (raised.value.reason, raised.value.retry_after) == ("TooManyRequests", 30.0)
    assert observer.codes() == {"429": 1}
    assert observer.retried == []


async def test_retrying_is_bounded_by_the_retry_window(
    fake: tuple[FakeApiServer, client.ApiClient],
) -> None:
    server, api = fake
    server.routes["POST", SERVICES] = Script(*[(503, {}, {})] * 100)
    observer = RecordingObserver()
    # Pauses of 0.15-0.3 s: a second's window holds at most 6 of them, so 7 attempts.
    policy = RetryPolicy(max_retry_seconds=1.0, first_backoff=0.3, max_backoff=0.3)
    async with Kube(api, max_in_flight=4, observer=observer, retry=policy) as kube:
        with pytest.raises(KubeUnavailable, match="answer 503"):
            await kube.create_service("ns", manifest(), dry_run=False, timeout=30)
    attempts = observer.codes()["503"]
    assert 2 <= attempts <= 7, attempts
    assert observer.codes() == {"503": attempts}
    assert len(observer.retried) == attempts - 1


async def test_a_retry_after_beyond_the_retry_window_gives_up_at_once(
    fake: tuple[FakeApiServer, client.ApiClient],
) -> None:
    server, api = fake
    server.routes["POST", SERVICES] = Script((429, {}, {"Retry-After": "30"}))
    observer = RecordingObserver()
    async with Kube(api, max_in_flight=4, observer=observer, retry=QUICK) as kube:
        with pytest.raises(KubeUnavailable) as raised:
            await kube.create_service("ns", manifest(), dry_run=False, timeout=None)
    assert (raised.value.reason, raised.value.retry_after) == ("TooManyRequests", 30.0)
    assert observer.codes() == {"429": 1}


async def test_no_retries_is_one_attempt(fake: tuple[FakeApiServer, client.ApiClient]) -> None:
    server, api = fake
    server.routes["POST", SERVICES] = Script((503, {}, {}))
    observer = RecordingObserver()
    async with Kube(api, max_in_flight=4, observer=observer, retry=NO_RETRIES) as kube:
        with pytest.raises(KubeUnavailable):
            await kube.create_service("ns", manifest(), dry_run=False, timeout=10)
    assert observer.codes() == {"503": 1}
    assert observer.retried == []


@asynccontextmanager
async def creating_while_down(
    refusals: int,
) -> AsyncIterator[tuple[Kube, asyncio.Task[Json], int, RecordingObserver]]:
    """A Kube over a port where nothing listens yet (connections refused, as while an API
    server restarts), and a create through it, started and refused at least `refusals` times:
    the block starts a server on the port (serving_on) to let it through."""
    port = free_port()
    observer = RecordingObserver()
    policy = RetryPolicy(max_retry_seconds=30, first_backoff=0.01, max_backoff=0.05)
    api = client.ApiClient(client.Configuration(host=f"http://127.0.0.1:{port}"))
    async with api, Kube(api, max_in_flight=4, observer=observer, retry=policy) as kube:
        create = asyncio.create_task(
            kube.create_service("ns", manifest(), dry_run=False, timeout=30)
        )
        while len(observer.finished) < refusals:
            assert not create.done()
            await asyncio.sleep(0.01)
        yield kube, create, port, observer


async def test_a_create_keeps_trying_until_the_api_server_is_back() -> None:
    # Far more attempts than a fixed number of quick ones would allow go by, and the create
    # succeeds once a server answers there.
    async with creating_while_down(20) as (_, create, port, observer):
        fake = FakeApiServer()
        fake.routes["POST", SERVICES] = Script()
        async with serving_on(port, fake.handle):
            assert await create == manifest()
    codes = observer.codes()
    assert codes["201"] == 1
    assert codes["error"] == len(observer.finished) - 1 >= 20
    assert observer.retry_reasons() == {"Unreachable": codes["error"]}


async def test_a_500_just_after_the_api_server_was_unreachable_is_retried() -> None:
    # A restarted kube-apiserver refuses its first creates with a 500 while its Service IP
    # allocator warms up ("range is full"): moments after it was down, that is not its decision.
    async with creating_while_down(2) as (kube, create, port, observer):
        fake = FakeApiServer()
        fake.routes["POST", SERVICES] = Script((500, {}, {}), (500, {}, {}))
        async with serving_on(port, fake.handle):
            assert await create == manifest()
            # Another call, its first attempt after the server came back, rides it out too.
            fake.routes["POST", SERVICES] = Script((500, {}, {}))
            assert await kube.create_service(
                "ns", manifest("b"), dry_run=False, timeout=30
            ) == manifest("b")
    codes = observer.codes()
    assert (codes["500"], codes["201"]) == (3, 2)


async def test_waiting_for_a_slot_does_not_use_up_the_retry_window(
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
        if name == "slow":
            await asyncio.sleep(1.5)  # holds the one slot for longer than the retry window
        elif arrivals.count(name) <= 2:
            return web.json_response(status_body(503, "ServiceUnavailable", "not now"),
                                     status=503)  # fmt: skip
        return web.json_response(body, status=201)

    server.routes["POST", SERVICES] = create
    # Pauses of 0.1-0.2 s: the slow call is sure to take the slot first; counting its wait
    # too, the retried call would be past its window after its second attempt.
    policy = RetryPolicy(max_retry_seconds=0.8, first_backoff=0.2, max_backoff=0.2)
    async with Kube(api, max_in_flight=1, retry=policy) as kube:  # one slot for both calls
        retried = asyncio.create_task(
            kube.create_service("ns", manifest("retried"), dry_run=False, timeout=30)
        )
        await first.wait()
        # Queued at once behind the first attempt's slot: the slow call gets it next, while the
        # retried one pauses, which then waits 1.5 s for it.
        slow = asyncio.create_task(
            kube.create_service("ns", manifest("slow"), dry_run=False, timeout=30)
        )
        assert await retried == manifest("retried")
        await slow
    assert arrivals == ["retried", "slow", "retried", "retried"]


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
    async with Kube(api, max_in_flight=4, observer=observer, retry=QUICK) as kube:
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
    async with Kube(api, max_in_flight=1, retry=QUICK) as kube:  # one slot for both calls
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
    policy = RetryPolicy(first_backoff=0.01, max_backoff=0.02, attempt_timeout=0.5)
    async with Kube(api, max_in_flight=4, observer=observer, retry=policy) as kube:
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
    [
        {"max_retry_seconds": -1.0},
        {"max_retry_seconds": math.inf},
        {"max_retry_seconds": math.nan},
        {"first_backoff": -1.0},
        {"first_backoff": 0.0},
        {"first_backoff": 9.0},
        {"attempt_timeout": 0.0},
    ],
)
def test_a_policy_that_cannot_work_is_refused(arguments: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        RetryPolicy(**arguments)


def json_bytes(value: object) -> bytes:
    return json.dumps(value).encode()


async def test_the_servers_max_retry_seconds_is_every_calls_window(
    fake: tuple[FakeApiServer, client.ApiClient],
) -> None:
    server, api = fake
    server.routes["GET", DEPLOYMENT] = answer(503, "ServiceUnavailable", "not now")
    observer = RecordingObserver()
    # No deadline: with the default window this request would keep trying for a minute.
    config = ServerConfig(listen="127.0.0.1:0", deployment_cache="off", max_retry_seconds=0)
    async with k8sailor_over(api, observer, config) as k8sailor:
        with pytest.raises(RequestFailed) as raised:
            _ = [r async for r in k8sailor.create_services("web", ["80"], namespace="ns")]
    assert raised.value.code is grpc.StatusCode.UNAVAILABLE
    assert observer.codes() == {"503": 1}
