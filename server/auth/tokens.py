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

- per connection (the gRPC peer) and per client address: a connection with `per_connection`
  tokens refused in the last `window` seconds, or an IP address with `per_address` refused
  over all its connections (so that a new connection for every few tokens gains nothing),
  gets UNAUTHENTICATED for any other unknown token without a review, until the oldest
  refusal is that old; one with that many under review (or refused and under review
  together) gets UNAVAILABLE until they are answered. Loopback addresses and Unix sockets
  are bounded per connection only: every caller through a proxy in the pod (a mesh sidecar,
  `kubectl port-forward`) arrives from there, and one of them must not lock the others out.
  Tokens the cache knows, good or refused, cost no review and are answered as always. A
  client that sent only good tokens leaves nothing behind; at most `peers` connections and
  addresses are remembered.
- in flight: at most `in_flight` reviews at a time, taken in turns by client address (by
  connection where there is none, as above; server.kube.fairness), and a client that already has
  one in flight waits once `shared_in_flight` are: the rest are kept for clients with none,
  so one client's reviews never hold up another's first. At most `waiting` wait; beyond that
  the newest of the client with the most waiting is turned away (UNAVAILABLE, "try again"),
  so memory stays bounded and a flood from one client cannot keep the others out of the
  queue.
- API call slots: a review's call takes its turn for k8sailor's API call slots as the same
  share, not as background work behind every List, Delete or Apply call.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import ipaddress
import json
import logging
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from server.auth.cache import ReviewCache, Timed
from server.auth.errors import AuthUnavailable, Unauthenticated
from server.auth.identity import Caller, Method
from server.kube import Kube
from server.kube.errors import KubeError, failure_reason
from server.kube.fairness import Crowded, FairSlots, Share, use_share
from server.kube.limits import FixedLimit

log = logging.getLogger("k8sailor.auth")

# Kubernetes tokens are about 1 KiB; gRPC caps all metadata at 8 KiB by default anyway.
MAX_TOKEN_BYTES = 8192


@dataclass(frozen=True, slots=True)
class _Refused:
    message: str


@dataclass(frozen=True, slots=True)
class ReviewBounds:
    """What tokens k8sailor has not seen may cost in TokenReviews (see the module doc)."""

    per_connection: int = 8  # refused or under review, per connection, within window
    per_address: int = 64  # ... per client IP address (not loopback), all its connections
    window: float = 60.0  # seconds a refusal counts against its connection and address
    in_flight: int = 8  # reviews at a time, all connections together
    shared_in_flight: int = 4  # ... of which a connection with one in flight may take
    waiting: int = 256  # reviews waiting for one of those, all connections together
    peers: int = 10_000  # connections and addresses remembered (with refusals or reviews)

    def __post_init__(self) -> None:
        for name in ("per_connection", "per_address", "in_flight", "shared_in_flight", "peers"):
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


class _Tally:
    """What one connection's (or one address's) unknown tokens cost lately: reviews under
    way, recent refusals; and its turn for the review slots and the API call slots."""

    __slots__ = ("key", "refusals", "reviewing", "share")

    def __init__(self, key: str, limit: int) -> None:
        self.key = key
        self.share = Share(key)
        self.reviewing = 0
        self.refusals: deque[float] = deque(maxlen=limit)  # when, oldest first


@dataclass(frozen=True, slots=True)
class Admission:
    """One review let in: what it counts against, and whose turn it takes."""

    tallies: tuple[_Tally, ...]  # the connection's, and its address's when it has one
    share: Share


class Peers:
    """The bounds on reviews per connection and per address (see the module doc)."""

    def __init__(self, bounds: ReviewBounds, clock: Callable[[], float]) -> None:
        self._bounds = bounds
        self._clock = clock
        self._table: dict[str, _Tally] = {}  # least recently seen first

    def __len__(self) -> int:
        return len(self._table)

    def admit(self, peer: str) -> Admission:
        """One more review under way for the connection (tell finished() how it went);
        Unauthenticated or AuthUnavailable when it may not have another now."""
        bounds = self._bounds
        counted = [(self._tally(peer, bounds.per_connection), "this connection")]
        address = peer_address(peer)
        if address is not None:
            tally = self._tally(f"address {address}", bounds.per_address)
            counted.append((tally, f"this client's address ({address}, on any connection)"))
        now = self._clock()
        for tally, _ in counted:
            while tally.refusals and tally.refusals[0] <= now - bounds.window:
                tally.refusals.popleft()
        try:
            for tally, who in counted:
                refusals = tally.refusals
                if refusals and len(refusals) == refusals.maxlen:
                    wait = refusals[0] + bounds.window - now
                    raise Unauthenticated(
                        f"{who} sent {len(refusals)} bearer tokens in the last "
                        f"{bounds.window:.0f} s that the API server refused: other tokens "
                        f"k8sailor has not seen are refused from it without review for "
                        f"{wait:.0f} s more"
                    )
            for tally, who in counted:
                most = tally.refusals.maxlen or 0
                if len(tally.refusals) + tally.reviewing >= most:
                    raise AuthUnavailable(
                        f"{who} has {tally.reviewing} bearer tokens under review and "
                        f"{len(tally.refusals)} refused in the last {bounds.window:.0f} s, the "
                        f"most it may have ({most}): try again when they are answered"
                    )
        except (Unauthenticated, AuthUnavailable):
            # A new connection refused for its address's sake has nothing of its own to keep.
            self._forget_idle(tally for tally, _ in counted)
            raise
        for tally, _ in counted:
            tally.reviewing += 1
        # The address's turn when there is one: a client's connections together take one.
        return Admission(tuple(tally for tally, _ in counted), counted[-1][0].share)

    def finished(self, admission: Admission, *, refused: bool) -> None:
        now = self._clock()
        for tally in admission.tallies:
            tally.reviewing -= 1
            if refused:
                tally.refusals.append(now)
        if not refused:
            self._forget_idle(admission.tallies)

    def _forget_idle(self, tallies: Iterable[_Tally]) -> None:
        """Forget those with nothing held against them (a good caller leaves nothing behind)."""
        for tally in tallies:
            idle = not tally.reviewing and not tally.refusals
            if idle and self._table.get(tally.key) is tally:
                del self._table[tally.key]

    def _tally(self, key: str, limit: int) -> _Tally:
        tally = self._table.pop(key, None)
        if tally is None:
            tally = _Tally(key, limit)
            if len(self._table) >= self._bounds.peers:
                del self._table[next(iter(self._table))]
        self._table[key] = tally
        return tally


def peer_address(peer: str) -> str | None:
    """The client's IP address in a gRPC peer string ("ipv4:10.0.0.7:5000",
    "ipv6:%5Bfd00::7%5D:5000"), or None when it has none that tells clients apart: a Unix
    socket, or loopback (every caller through a proxy in the pod, a mesh sidecar or
    `kubectl port-forward`, arrives from there)."""
    kind, _, address = urllib.parse.unquote(peer).partition(":")
    if kind not in ("ipv4", "ipv6"):
        return None
    host = address.rsplit(":", 1)[0].strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        # One client holds a whole /64 (SLAAC, privacy addresses): it is one address here.
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


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
        accepted_for: float = 3600.0,
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
        self.peers = Peers(bounds, clock)
        # Tokens the API server accepted lately (their hashes, most recent last): when their
        # cached answer expires, they are reviewed again outside the bounds on unknown tokens,
        # so that a flood from the same address (a NAT, a node) cannot lock out its callers.
        self._accepted: dict[bytes, float] = {}  # hash -> until when (wall clock)
        self._accepted_for = accepted_for
        self._accepted_entries = max_entries
        self._known_share = Share("known tokens")
        self._slots = FairSlots(
            bounds.in_flight, FixedLimit(bounds.shared_in_flight), max_waiting=bounds.waiting
        )

    async def review(self, token: str, peer: str) -> Caller:
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
            # nothing more; a new one must be admitted first, unless the token was accepted
            # lately.
            admitted = None if self.cache.pending(key) else self._admit(key, peer)
            answer = await self.cache.get(key, functools.partial(self._review, token, admitted))
        if isinstance(answer, _Refused):
            self._accepted.pop(key, None)
            raise Unauthenticated(answer.message)
        self._accepted.pop(key, None)
        if len(self._accepted) >= self._accepted_entries:
            del self._accepted[next(iter(self._accepted))]
        self._accepted[key] = self._clock() + self._accepted_for
        return answer

    def _admit(self, key: bytes, peer: str) -> Admission:
        until = self._accepted.get(key)
        if until is not None and until > self._clock():
            return Admission((), self._known_share)
        return self.peers.admit(peer)

    async def _review(self, token: str, admitted: Admission | None) -> Timed[Caller | _Refused]:
        assert admitted is not None  # only called when nothing was pending: admitted
        refused = False
        try:
            # This task's own context: the API call slot is the same turn.
            use_share(admitted.share)
            answer = await self._review_in_turn(token, admitted.share)
            refused = isinstance(answer.value, _Refused)
            return answer
        finally:
            self.peers.finished(admitted, refused=refused)

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
            # The caller has proved nothing yet: it hears why in one word, never the API
            # server's address or k8sailor's own identity, which the full message may name.
            log.warning("a TokenReview failed: %s", error.message)
            raise AuthUnavailable(
                f"the token could not be reviewed: the API server did not answer the review "
                f"({failure_reason(error)}); try again"
            ) from error
        finally:
            self._slots.release(ticket)
        return self._verdict(token, review)

    def _verdict(self, token: str, review: dict[str, Any]) -> Timed[Caller | _Refused]:
        status: dict[str, Any] = review.get("status") or {}
        audiences = ", ".join(self._audiences)
        if not status.get("authenticated"):
            # Why, for the operator only: a webhook token authenticator's error may name its
            # address, and the caller has proved nothing.
            error = str(status.get("error") or "")
            if error:
                log.info("a bearer token was refused: %.512s", error)
            # The one reason a caller can act on (get a new token), in words of ours.
            expired = ": the token has expired" if "expired" in error.lower() else ""
            return Timed(
                _Refused(
                    f"the API server refused the bearer token (audiences {audiences}){expired}"
                ),
                self._refused_ttl,
            )
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
