"""Bearer tokens, checked by the API server with a TokenReview and remembered briefly.

The API server is the only judge of a token: it checks the signature, the expiry, the
audiences and that the ServiceAccount (and the pod it was bound to) still exist. k8sailor only
remembers the answer, keyed by a SHA-256 of the token (never the token itself), for at most
`max_ttl` seconds and never past the token's own expiry, and a refusal for a few seconds so
that a caller retrying a bad token does not turn into a flood of reviews. An answer that
authenticates the token must also name one of the audiences k8sailor asked for
(status.audiences), as kube-apiserver's own webhook token authenticator requires: an
authenticator that names none is not audience-aware, and its "yes" holds for the API server
only.

A token k8sailor has not seen costs a review, so what a caller with random tokens can make
k8sailor ask the API server is bounded (`ReviewBounds`):

- per connection (the gRPC peer): a connection with `per_connection` tokens refused in the
  last `window` seconds gets UNAUTHENTICATED for any other unknown token without a review,
  until the oldest refusal is that old; one with that many under review (or refused and under
  review together) gets UNAVAILABLE until they are answered. Tokens the cache knows, good or
  refused, cost no review and are answered as always. A connection that sent only good tokens
  leaves nothing behind; at most `connections` are remembered.
- in flight: at most `in_flight` reviews at a time, taken in turns by connection
  (server.fairness), and a connection that already has one in flight waits once
  `shared_in_flight` are: the rest are kept for connections with none, so one connection's
  reviews never hold up another's first. At most `waiting` wait; beyond that the newest of
  the connection with the most waiting is turned away (UNAVAILABLE, "try again"), so memory
  stays bounded and a flood from one connection cannot keep the others out of the queue.
- API call slots: a review's call takes its turn for k8sailor's API call slots as its
  connection's own share, not as background work behind every List, Delete or Apply call.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import json
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from server.auth.cache import ReviewCache, Timed
from server.auth.errors import AuthUnavailable, Unauthenticated
from server.auth.identity import Caller, Method
from server.errors import KubeError
from server.fairness import Crowded, FairSlots, Share, use_share
from server.kube import Kube
from server.limits import FixedLimit

# Kubernetes tokens are about 1 KiB; gRPC caps all metadata at 8 KiB by default anyway.
MAX_TOKEN_BYTES = 8192


@dataclass(frozen=True, slots=True)
class _Refused:
    message: str


@dataclass(frozen=True, slots=True)
class ReviewBounds:
    """What tokens k8sailor has not seen may cost in TokenReviews (see the module doc)."""

    per_connection: int = 8  # refused or under review, per connection, within window
    window: float = 60.0  # seconds a refusal counts against its connection
    in_flight: int = 8  # reviews at a time, all connections together
    shared_in_flight: int = 4  # ... of which a connection with one in flight may take
    waiting: int = 256  # reviews waiting for one of those, all connections together
    connections: int = 10_000  # connections remembered (those with refusals or reviews)

    def __post_init__(self) -> None:
        for name in ("per_connection", "in_flight", "shared_in_flight", "connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.shared_in_flight > self.in_flight:
            raise ValueError(
                f"shared_in_flight ({self.shared_in_flight}) must not exceed in_flight "
                f"({self.in_flight})"
            )
        if self.waiting < 0:
            raise ValueError(f"waiting must be at least 0, not {self.waiting}")
        if self.window <= 0:
            raise ValueError(f"window must be positive, not {self.window}")


class _Connection:
    """What one connection's unknown tokens cost lately: reviews under way, recent refusals."""

    __slots__ = ("peer", "refusals", "reviewing", "share")

    def __init__(self, peer: str, limit: int) -> None:
        self.peer = peer
        self.share = Share(peer)  # its turn, for the review slots and the API call slots
        self.reviewing = 0
        self.refusals: deque[float] = deque(maxlen=limit)  # when, oldest first


class Connections:
    """The per-connection bound on reviews (see the module doc), by gRPC peer string."""

    def __init__(self, bounds: ReviewBounds, clock: Callable[[], float]) -> None:
        self._bounds = bounds
        self._clock = clock
        self._table: dict[str, _Connection] = {}  # least recently seen first

    def __len__(self) -> int:
        return len(self._table)

    def admit(self, peer: str) -> _Connection:
        """The connection, now with one more review under way (tell finished() how it
        went); Unauthenticated or AuthUnavailable when it may not have another now."""
        bounds = self._bounds
        connection = self._table.pop(peer, None)
        if connection is None:
            connection = _Connection(peer, bounds.per_connection)
            if len(self._table) >= bounds.connections:
                del self._table[next(iter(self._table))]
        self._table[peer] = connection
        now = self._clock()
        refusals = connection.refusals
        while refusals and refusals[0] <= now - bounds.window:
            refusals.popleft()
        if len(refusals) >= bounds.per_connection:
            wait = refusals[0] + bounds.window - now
            raise Unauthenticated(
                f"this connection sent {len(refusals)} bearer tokens in the last "
                f"{bounds.window:.0f} s that the API server refused: other tokens k8sailor has "
                f"not seen are refused without review on it for {wait:.0f} s more"
            )
        if len(refusals) + connection.reviewing >= bounds.per_connection:
            raise AuthUnavailable(
                f"this connection has {connection.reviewing} bearer tokens under review and "
                f"{len(refusals)} refused in the last {bounds.window:.0f} s, the most it may "
                f"have ({bounds.per_connection}): try again when they are answered"
            )
        connection.reviewing += 1
        return connection

    def finished(self, connection: _Connection, *, refused: bool) -> None:
        connection.reviewing -= 1
        if refused:
            connection.refusals.append(self._clock())
            return
        # Nothing to hold against it: forget it (a good caller leaves nothing behind).
        idle = not connection.reviewing and not connection.refusals
        if idle and self._table.get(connection.peer) is connection:
            del self._table[connection.peer]


class TokenReviewer:
    def __init__(
        self,
        kube: Kube,
        audiences: Sequence[str],
        *,
        max_ttl: float = 120.0,
        refused_ttl: float = 10.0,
        timeout: float = 10.0,
        max_entries: int = 10_000,
        bounds: ReviewBounds = ReviewBounds(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._kube = kube
        self._audiences = tuple(audiences)
        self._max_ttl = max_ttl
        self._refused_ttl = refused_ttl
        self._timeout = timeout
        self._bounds = bounds
        # Wall-clock time: TTLs are bounded by the token's exp claim, which is wall-clock.
        self._clock = clock
        self.cache: ReviewCache[bytes, Caller | _Refused] = ReviewCache(
            max_entries=max_entries, clock=clock
        )
        self.connections = Connections(bounds, clock)
        self._slots = FairSlots(
            bounds.in_flight, FixedLimit(bounds.shared_in_flight), max_waiting=bounds.waiting
        )

    async def review(self, token: str, peer: str = "") -> Caller:
        """The caller the token names; Unauthenticated when the API server refuses it.

        peer is the gRPC peer string of the connection the token came on (context.peer()):
        what a connection's unknown tokens may cost is bounded by it."""
        problem = token_problem(token)
        if problem is not None:
            raise Unauthenticated(f"the bearer token {problem}")
        key = hashlib.sha256(token.encode()).digest()
        answer = self.cache.cached(key)
        if answer is None:
            # A review under way for the same token is shared, and costs the connection
            # nothing more; a new one must be admitted first.
            connection = None if self.cache.pending(key) else self.connections.admit(peer)
            answer = await self.cache.get(key, functools.partial(self._review, token, connection))
        if isinstance(answer, _Refused):
            raise Unauthenticated(answer.message)
        return answer

    async def _review(self, token: str, connection: _Connection | None) -> Timed[Caller | _Refused]:
        assert connection is not None  # only called when nothing was pending: admitted
        refused = False
        try:
            # This task's own context: the API call slot is the connection's turn too.
            use_share(connection.share)
            answer = await self._review_in_turn(token, connection.share)
            refused = isinstance(answer.value, _Refused)
            return answer
        finally:
            self.connections.finished(connection, refused=refused)

    async def _review_in_turn(self, token: str, share: Share) -> Timed[Caller | _Refused]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        try:
            async with asyncio.timeout(self._timeout):
                ticket = await self._slots.acquire(share)
        except TimeoutError as error:
            raise AuthUnavailable(
                f"the token could not be reviewed: it waited {self._timeout:g} s for one of "
                f"the {self._bounds.in_flight} reviews k8sailor makes at a time"
            ) from error
        except Crowded as error:
            raise AuthUnavailable(
                f"the token could not be reviewed now: {self._slots.waiting} other bearer "
                f"tokens are waiting for review, the most k8sailor lets wait; try again in a "
                f"moment"
            ) from error
        try:
            review = await self._kube.create_token_review(
                token, self._audiences, timeout=max(deadline - loop.time(), 0.001)
            )
        except KubeError as error:
            raise AuthUnavailable(f"the token could not be reviewed: {error.message}") from error
        finally:
            self._slots.release(ticket)
        return self._verdict(token, review)

    def _verdict(self, token: str, review: dict[str, Any]) -> Timed[Caller | _Refused]:
        status: dict[str, Any] = review.get("status") or {}
        audiences = ", ".join(self._audiences)
        if not status.get("authenticated"):
            reason = str(status.get("error") or "").strip() or "not authenticated"
            return Timed(
                _Refused(f"the API server refused the bearer token (audiences {audiences}): "
                         f"{reason}"),
                self._refused_ttl,
            )  # fmt: skip
        granted = [str(audience) for audience in status.get("audiences") or ()]
        if self._audiences and not set(granted) & set(self._audiences):
            named = (
                ", ".join(granted)
                if granted
                else "none (so the token holds for the API server only)"
            )
            return Timed(
                _Refused(
                    f"the bearer token is not for this server: the token review accepted it "
                    f"for the audiences {named}, and k8sailor needs one of {audiences} "
                    f"(--token-audience)"
                ),
                self._refused_ttl,
            )
        user: dict[str, Any] = status.get("user") or {}
        name = str(user.get("username") or "")
        if not name:
            return Timed(_Refused("the token review named no user"), self._refused_ttl)
        caller = Caller(
            user=name,
            groups=tuple(str(group) for group in user.get("groups") or ()),
            method=Method.TOKEN,
            uid=str(user.get("uid") or ""),
            extra={
                str(key): tuple(str(value) for value in values or ())
                for key, values in (user.get("extra") or {}).items()
            },
        )
        return Timed(caller, self._ttl(token))

    def _ttl(self, token: str) -> float:
        expires = token_expiry(token)
        if expires is None:
            return self._max_ttl
        return max(0.0, min(self._max_ttl, expires - self._clock()))


def token_problem(token: str) -> str | None:
    """Why a string cannot be a bearer token at all (checked before any review), or None."""
    if not token:
        return "is empty"
    if len(token) > MAX_TOKEN_BYTES:
        return f"is {len(token)} bytes, more than the {MAX_TOKEN_BYTES} any Kubernetes token has"
    if not token.isascii() or not token.isprintable() or " " in token:
        return "has characters no token has (spaces, control or non-ASCII characters)"
    return None


def token_expiry(token: str) -> float | None:
    """The exp claim of a JWT, read without checking anything: only used, after the API server
    has accepted the token, to stop caching that answer once the token has expired."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, binascii.Error):
        return None
    expiry = claims.get("exp") if isinstance(claims, dict) else None
    return float(expiry) if isinstance(expiry, int | float) else None
