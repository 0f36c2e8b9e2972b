"""Bearer tokens, checked by the API server with a TokenReview and remembered briefly.

The API server is the only judge of a token: it checks the signature, the expiry, the
audiences and that the ServiceAccount (and the pod it was bound to) still exist. k8sailor only
remembers the answer, keyed by a SHA-256 of the token (never the token itself), for at most
`max_ttl` seconds and never past the token's own expiry, and a refusal for a few seconds so
that a caller retrying a bad token does not turn into a flood of reviews.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from server.auth.cache import ReviewCache, Timed
from server.auth.errors import AuthUnavailable, Unauthenticated
from server.auth.identity import Caller, Method
from server.errors import KubeError
from server.kube import Kube

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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._kube = kube
        self._audiences = tuple(audiences)
        self._max_ttl = max_ttl
        self._refused_ttl = refused_ttl
        self._timeout = timeout
        # Wall-clock time: TTLs are bounded by the token's exp claim, which is wall-clock.
        self._clock = clock
        self.cache: ReviewCache[bytes, Caller | _Refused] = ReviewCache(
            max_entries=max_entries, clock=clock
        )

    async def review(self, token: str) -> Caller:
        """The caller the token names; Unauthenticated when the API server refuses it."""
        problem = token_problem(token)
        if problem is not None:
            raise Unauthenticated(f"the bearer token {problem}")
        key = hashlib.sha256(token.encode()).digest()
        answer = await self.cache.get(key, lambda: self._review(token))
        if isinstance(answer, _Refused):
            raise Unauthenticated(answer.message)
        return answer

    async def _review(self, token: str) -> Timed[Caller | _Refused]:
        try:
            review = await self._kube.create_token_review(
                token, self._audiences, timeout=self._timeout
            )
        except KubeError as error:
            raise AuthUnavailable(f"the token could not be reviewed: {error.message}") from error
        status: dict[str, Any] = review.get("status") or {}
        audiences = ", ".join(self._audiences)
        if not status.get("authenticated"):
            reason = str(status.get("error") or "").strip() or "not authenticated"
            return Timed(
                _Refused(f"the API server refused the bearer token (audiences {audiences}): "
                         f"{reason}"),
                self._refused_ttl,
            )  # fmt: skip
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
