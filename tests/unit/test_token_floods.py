"""What unknown bearer tokens may cost: the bounds on TokenReviews per connection and in
flight, the negative cache, the audiences an answer must name, and whose turn a review's API
call takes.

These are k8sailor's own scheduling and the answers the real API server cannot be made to give
on demand (a review that hangs until the test lets it go, an authenticated answer with other
audiences), from a fake API server over real HTTP. The same flood through a real grpc.aio
server and the real API server is in tests/auth/test_tokens.py.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio import client

from server.auth.access import AccessReviewer
from server.auth.errors import AuthUnavailable, Unauthenticated
from server.auth.identity import Method
from server.auth.review_bounds import ReviewBounds, peer_address
from server.auth.tokens import TokenReviewer
from server.kube import Kube
from server.kube.fairness import Share
from server.rules import ServiceType
from tests.turns import Turns
from tests.unit.fakeapi import FakeApiServer, fake_api_server

TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
GOOD = "good-token"
FLOOD = "ipv4:10.0.0.66:40000"
OTHER = "ipv4:10.0.0.7:50000"


@dataclass
class Reviews:
    """Answers TokenReviews as an audience-aware API server would: GOOD (and any token in
    good) is user "alice" for the audiences asked, anything else is refused. Tokens not in
    good wait for `let_go` while `hold` is on. Counts what arrived."""

    good: set[str] = field(default_factory=lambda: {GOOD})
    hold: bool = False
    let_go: asyncio.Event = field(default_factory=asyncio.Event)
    audiences: list[str] | None = None  # what status.audiences says; None: the ones asked
    tokens: list[str] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        spec = (await request.json())["spec"]
        token = spec["token"]
        self.tokens.append(token)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.hold and token not in self.good:
                await self.let_go.wait()
        finally:
            self.in_flight -= 1
        status: dict[str, Any]
        if token in self.good:
            audiences = spec["audiences"] if self.audiences is None else self.audiences
            status = {"authenticated": True, "user": {"username": "alice"}}
            if audiences:
                status["audiences"] = audiences
        else:
            status = {"authenticated": False, "error": "invalid bearer token"}
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status}
        return web.json_response(body, status=201)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeApiServer, client.ApiClient]]:
    async with fake_api_server() as running:
        yield running


# The Kubes a test made (kube_over), closed when it ends.
_made: list[Kube] = []


def kube_over(api: client.ApiClient, **options: Any) -> Kube:
    kube = Kube(api, **options)
    _made.append(kube)
    return kube


@pytest.fixture(autouse=True)
async def _close_kubes() -> AsyncIterator[None]:
    yield
    while _made:
        await _made.pop().close()


def reviewer_over(
    fake: tuple[FakeApiServer, client.ApiClient],
    reviews: Reviews,
    observer: Turns | None = None,
    **options: Any,
) -> TokenReviewer:
    server, api = fake
    server.routes["POST", TOKEN_REVIEWS] = reviews
    reviews.let_go = server.released  # set at teardown too, whatever the test did
    return TokenReviewer(
        kube_over(api, max_in_flight=32, observer=observer), ["k8sailor"], **options
    )


async def until(condition: Callable[[], bool]) -> None:
    """Until condition() holds: what the tasks started do takes a few loop turns and a few
    round trips to the fake (generously bounded, for a loaded machine)."""
    async with asyncio.timeout(30):
        while not condition():  # noqa: ASYNC110 - a condition, not an event
            await asyncio.sleep(0.01)


def random_token() -> str:
    return f"flood-{uuid.uuid4().hex}"


async def outcome(reviewer: TokenReviewer, token: str, peer: str) -> str:
    """What became of one review, as a word: the caller's name, or the error's class."""
    try:
        return (await reviewer.review(token, peer)).user
    except (Unauthenticated, AuthUnavailable) as error:
        return type(error).__name__


async def test_a_flood_of_distinct_tokens_on_one_connection_costs_at_most_the_bound(
    fake: tuple[FakeApiServer, client.ApiClient],
) -> None:
    reviews = Reviews()
    reviewer = reviewer_over(fake, reviews)
    flood = [await outcome(reviewer, random_token(), FLOOD) for _ in range(100)]

    assert len(reviews.tokens) == ReviewBounds().per_connection == 8
    assert flood == ["Unauthenticated"] * 100
    with pytest.raises(Unauthenticated) as refused:
        await reviewer.review(random_token(), FLOOD)
    assert str(refused.value).startswith(
        "this connection sent 8 bearer tokens in the last 60 s that the API server refused: "
        "other tokens k8sailor has not seen are refused from it without review for "
    )
    assert len(reviews.tokens) == 8
    # Another connection is reviewed as ever, and a good token on the flooding connection
    # that k8sailor knows already is still let in.
    assert await outcome(reviewer, GOOD, OTHER) == "alice"
    assert await outcome(reviewer, GOOD, FLOOD) == "alice"
    assert await outcome(reviewer, random_token(), OTHER) == "Unauthenticated"
    assert len(reviews.tokens) == 10


async def test_a_connection_is_reviewed_again_once_its_refusals_are_old(
    fake: tuple[FakeApiServer, client.ApiClient],
) -> None:
    now = [1_000_000.0]
    reviews = Reviews()
    bounds = ReviewBounds(per_connection=2, window=30)
    reviewer = reviewer_over(fake, reviews, bounds=bounds, clock=lambda: now[0])
    for _ in range(5):
        await outcome(reviewer, random_token(), FLOOD)
    assert len(reviews.tokens) == 2
    now[0] += 29
    await outcome(reviewer, random_token(), FLOOD)
    assert len(reviews.tokens) == 2
    now[0] += 1.5
    assert await outcome(reviewer, GOOD, FLOOD) == "alice"
    assert len(reviews.tokens) == 3
    # A connection that has nothing held against it any more is forgotten.
    assert len(reviewer.peers) == 0


async def test_a_client_that_opens_a_new_connection_for_each_few_tokens_is_bounded_too(
    fake: tuple[FakeApiServer, client.ApiClient],
) -> None:
    reviews = Reviews()
    reviewer = reviewer_over(fake, reviews)
    for port in range(40000, 40100):  # 100 connections, 8 tokens each
        for _ in range(8):
            await outcome(reviewer, random_token(), f"ipv4:10.0.0.66:{port}")

    assert len(reviews.tokens) == ReviewBounds().per_address == 64
    with pytest.raises(Unauthenticated) as refused:
        await reviewer.review(random_token(), "ipv4:10.0.0.66:50000")
    assert str(refused.value).startswith(
        "this client's address (10.0.0.66, on any connection) sent 64 bearer tokens in the last "
        "60 s that the API server refused: other tokens k8sailor has not seen are refused from "
        "it without review for "
    )
    # Another client's address is not held to it.
    assert await outcome(reviewer, GOOD, OTHER) == "alice"
    # Remembered: the eight connections that had tokens refused, and the address.
    assert len(reviewer.peers) == 9


async def test_a_flood_from_a_shared_address_does_not_lock_out_a_token_accepted_before(
    fake: tuple[FakeApiServer, client.ApiClient],
) -> None:
    # Callers behind one NAT share an address, and so its bound: a token the API server
    # accepted lately is reviewed again, once its answer expires, without counting against it.
    now = [1_000_000.0]
    reviews = Reviews()
    reviewer = reviewer_over(fake, reviews, max_ttl=30, clock=lambda: now[0])
    nat = "ipv4:10.0.0.66:{port}"
    assert await outcome(reviewer, GOOD, nat.format(port=50000)) == "alice"
    for port in range(40000, 40000 + 100):  # a new connection for every few tokens
        await outcome(reviewer, random_token(), nat.format(port=port))
    assert await outcome(reviewer, random_token(), nat.format(port=39999)) == "Unauthenticated"
    now[0] += 31  # the answer for GOOD expired; the address's refusals still count (60 s)
    before = len(reviews.tokens)
    assert await outcome(reviewer, GOOD, nat.format(port=50001)) == "alice"
    assert reviews.tokens[before:] == [GOOD]


def test_an_ipv6_client_is_its_slash_64() -> None:
    assert peer_address("ipv6:%5B2001:db8:1:2:aaaa::1%5D:5000") == "2001:db8:1:2::/64"
    assert peer_address("ipv6:%5B2001:db8:1:2:bbbb::7%5D:5001") == "2001:db8:1:2::/64"
    assert peer_address("ipv4:10.0.0.7:5000") == "10.0.0.7"


@pytest.mark.parametrize(
    "peer", ["ipv4:127.0.0.1:{port}", "ipv6:%5B::1%5D:{port}", "ipv6:[::ffff:127.0.0.1]:{port}"]
)
async def test_loopback_connections_are_bounded_each_not_together(
    fake: tuple[FakeApiServer, client.ApiClient], peer: str
) -> None:
    # Every caller through a proxy in the pod comes from loopback: one such caller's bad
    # tokens must not lock the others out, so only each connection is bounded.
    reviews = Reviews()
    reviewer = reviewer_over(fake, reviews, bounds=ReviewBounds(per_connection=2, per_address=3))
    for port in range(10):
        for _ in range(3):
            await outcome(reviewer, random_token(), peer.format(port=port))
    assert len(reviews.tokens) == 20


async def test_one_bad_token_sent_again_and_again_costs_one_review(
    fake: tuple[FakeApiServer, client.ApiClient],
) -> None:
    reviews = Reviews()
    reviewer = reviewer_over(fake, reviews)
    bad = random_token()
    together = await asyncio.gather(*(outcome(reviewer, bad, FLOOD) for _ in range(20)))
    one_by_one = [await outcome(reviewer, bad, peer) for peer in (FLOOD, OTHER) * 10]

    assert set(together) == set(one_by_one) == {"Unauthenticated"}
    assert reviews.tokens == [bad]
    # ... and spent one of the connection's eight, not twenty.
    for _ in range(7):
        await outcome(reviewer, random_token(), FLOOD)
    assert len(reviews.tokens) == 8


async def test_reviews_in_flight_are_capped_and_a_flood_does_not_hold_up_another_connection(
    fake: tuple[FakeApiServer, client.ApiClient],
) -> None:
    reviews = Reviews(hold=True)
    reviewer = reviewer_over(fake, reviews)
    flood = [asyncio.create_task(outcome(reviewer, random_token(), FLOOD)) for _ in range(50)]
    # Beyond the connection's eight, refused at once; of the eight, four in flight (a
    # connection with reviews in flight takes at most shared_in_flight), four waiting.
    await until(lambda: reviews.in_flight == 4 and reviewer._slots.waiting == 4)
    assert [task.result() for task in flood if task.done()] == ["AuthUnavailable"] * 42

    # While the flood's reviews hang, another connection's is made and answered.
    assert await outcome(reviewer, GOOD, OTHER) == "alice"

    reviews.let_go.set()
    assert set(await asyncio.gather(*flood)) == {"AuthUnavailable", "Unauthenticated"}
    assert len(reviews.tokens) == 9
    assert reviews.most_in_flight == 5


async def test_many_clients_flooding_at_once_are_bounded_in_flight_and_waiting(
    fake: tuple[FakeApiServer, client.ApiClient],
) -> None:
    reviews = Reviews(hold=True)
    bounds = ReviewBounds(in_flight=8, shared_in_flight=4, waiting=16)
    reviewer = reviewer_over(fake, reviews, bounds=bounds)
    flood = [
        asyncio.create_task(reviewer.review(random_token(), f"ipv4:10.0.1.{host}:40000"))
        for host in range(20)
        for _ in range(8)  # each connection's most
    ]
    await until(lambda: reviews.in_flight == 8 and sum(task.done() for task in flood) == 136)
    assert reviewer._slots.waiting == 16
    turned_away = [task.exception() for task in flood if task.done()]
    for error in turned_away:
        assert isinstance(error, AuthUnavailable)
        assert str(error).startswith("the token could not be reviewed now: ")
        assert str(error).endswith(
            " other bearer tokens are waiting for review, the most k8sailor lets wait; try "
            "again in a moment"
        )

    # A connection with nothing waiting still gets a place in the queue (a flooding one
    # gives up its newest), and its answer once the reviews ahead of it are done.
    legitimate = asyncio.create_task(outcome(reviewer, GOOD, OTHER))
    await until(lambda: sum(task.done() for task in flood) == 137)
    assert not legitimate.done()
    assert reviewer._slots.waiting == 16
    reviews.let_go.set()
    assert await legitimate == "alice"
    await asyncio.gather(*flood, return_exceptions=True)
    assert reviews.most_in_flight == 8


async def test_a_review_that_waits_longer_than_its_timeout_is_unavailable(
    fake: tuple[FakeApiServer, client.ApiClient],
) -> None:
    reviews = Reviews()
    bounds = ReviewBounds(in_flight=2, shared_in_flight=1)
    reviewer = reviewer_over(fake, reviews, bounds=bounds, timeout=0.5)
    # Both review slots taken, as by two reviews that take their time.
    held = [await reviewer._slots.acquire(Share(f"ipv4:10.0.0.66:{port}")) for port in (1, 2)]
    with pytest.raises(AuthUnavailable) as waited:
        await reviewer.review(GOOD, OTHER)
    assert str(waited.value) == (
        "the token could not be reviewed: it waited 0.5 s for one of the 2 reviews k8sailor "
        "makes at a time"
    )
    assert reviews.tokens == []
    for ticket in held:
        reviewer._slots.release(ticket)
    # Nothing was remembered of it: the next try is reviewed.
    assert await outcome(reviewer, GOOD, OTHER) == "alice"


@pytest.mark.parametrize(
    ("audiences", "refusal"),
    [
        (["vault"], "the token review accepted it for the audiences vault, and k8sailor needs "
                    "one of k8sailor (--token-audience)"),
        ([], "the token review accepted it for the audiences none (so the token holds for the "
             "API server only), and k8sailor needs one of k8sailor (--token-audience)"),
    ],
)  # fmt: skip
async def test_an_answer_for_other_audiences_is_unauthenticated(
    fake: tuple[FakeApiServer, client.ApiClient], audiences: list[str], refusal: str
) -> None:
    reviews = Reviews(audiences=audiences)
    reviewer = reviewer_over(fake, reviews)
    with pytest.raises(Unauthenticated) as refused:
        await reviewer.review(GOOD, OTHER)
    assert str(refused.value) == "the bearer token is not for this server: " + refusal
    # Remembered as a refusal: asking again costs no second review.
    with pytest.raises(Unauthenticated):
        await reviewer.review(GOOD, OTHER)
    assert len(reviews.tokens) == 1


async def test_an_answer_that_names_one_of_the_audiences_asked_is_the_caller(
    fake: tuple[FakeApiServer, client.ApiClient],
) -> None:
    reviews = Reviews(audiences=["vault", "k8sailor"])
    server, api = fake
    server.routes["POST", TOKEN_REVIEWS] = reviews
    reviewer = TokenReviewer(kube_over(api, max_in_flight=4), ["other", "k8sailor"])
    caller = await reviewer.review(GOOD, OTHER)
    assert (caller.user, caller.method) == ("alice", Method.TOKEN)


async def test_reviews_take_their_connections_and_callers_turns_not_the_background_one(
    fake: tuple[FakeApiServer, client.ApiClient],
) -> None:
    server, api = fake
    turns = Turns()
    reviewer = reviewer_over(fake, Reviews(), turns)

    async def allow(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        return web.json_response({**body, "status": {"allowed": True}}, status=201)

    server.routes["POST", ACCESS_REVIEWS] = allow
    access = AccessReviewer(kube_over(api, max_in_flight=4, observer=turns))
    caller = await reviewer.review(GOOD, OTHER)
    await access.decide(caller, "team-a", "web", [ServiceType.CLUSTER_IP], "list")

    assert turns.calls == [
        ("create", "tokenreviews", "address 10.0.0.7"),  # its address's, over connections
        ("create", "subjectaccessreviews", "alice"),
    ]


def test_review_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match=r"shared_in_flight \(9\) must not exceed in_flight"):
        ReviewBounds(shared_in_flight=9)
    with pytest.raises(ValueError, match="per_connection must be at least 1, not 0"):
        ReviewBounds(per_connection=0)
