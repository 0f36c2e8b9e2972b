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
k8sailor ask the API server is bounded (`ReviewBounds`, server.auth.review_bounds):

- per connection and per client address: a connection or address with too many tokens
  refused lately, or under review, gets no review for another unknown token until they age
  or are answered (see server.auth.review_bounds);
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
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from server.auth.cache import ReviewCache, Timed
from server.auth.errors import AuthUnavailable, Unauthenticated
from server.auth.identity import Caller, Method
from server.auth.review_bounds import DEFAULT_REVIEW_BOUNDS, Admission, Peers, ReviewBounds
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
        bounds: ReviewBounds = DEFAULT_REVIEW_BOUNDS,
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
