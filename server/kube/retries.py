"""How one API call is tried again: the policy (how long, how far apart) and the loop.

Every call of server.kube.client goes through `Retrying.run`, so every call gets the same
retries, bounded by the caller's deadline and the policy's window, told to the observer, and
one reload of k8sailor's credentials after a 401. Nothing else in the server retries.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from server.kube.answers import Json
from server.kube.credentials import CredentialsReload
from server.kube.errors import KubeError, KubeUnauthorized, is_transient
from server.kube.observers import CallObserver

__all__ = ["DEFAULT_RETRIES", "NO_RETRIES", "Attempt", "RetryClock", "RetryPolicy", "Retrying"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long one API call keeps trying, within the caller's deadline, before giving up.

    Retried: 429, 503 and 504 (after Retry-After or details.retryAfterSeconds when the API
    server gives one), any other 5xx that gives one, and connections refused, reset or timed
    out before an answer. A create is safe to send again: one that finds its Service already
    there is read and compared by the create flow (server.domain.create).

    Tries are counted in time, not in number: an API server that restarts is gone for 10-60 s
    in real clusters, and a fixed number of quick attempts is spent in its first seconds (six
    of them were over in 3-6 s), when a restart shorter than the caller's deadline should cost
    latency, not results. A call keeps trying for up to max_retry_seconds after its first
    failure (about 20 attempts in the default minute, with the default backoff), and never past
    the caller's deadline. Time spent waiting for an API call slot is not counted: a call
    queued behind others is not trying, and must not use up its window by waiting.
    """

    # The most one call spends retrying (attempts and pauses after its first failure); 0:
    # never retried. Sixty seconds covers an API server restart in most clusters; a caller's
    # shorter deadline bounds it first.
    max_retry_seconds: float = 60.0
    first_backoff: float = 0.2  # seconds before the second attempt; doubles after each
    # Capped, so that a call comes back within seconds of the API server's return, and
    # jittered, so that the calls turned away together do not all come back together.
    max_backoff: float = 5.0
    # An attempt that has no answer by then is abandoned and tried again (when the deadline
    # leaves room): a stalled connection must not eat the caller's whole deadline.
    attempt_timeout: float = 20.0

    def __post_init__(self) -> None:
        if not 0 <= self.max_retry_seconds < math.inf:
            raise ValueError(
                f"max_retry_seconds must be a finite number >= 0, not {self.max_retry_seconds}"
            )
        # A backoff of 0 would retry in a busy loop for the whole window.
        if not 0 < self.first_backoff <= self.max_backoff:
            raise ValueError("backoffs must satisfy 0 < first_backoff <= max_backoff")
        if self.attempt_timeout <= 0:
            raise ValueError(f"attempt_timeout must be positive, not {self.attempt_timeout}")

    def pause(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based).

        Exponential backoff with jitter (between half and all of it), so that calls throttled
        together do not all come back together. With the API server's Retry-After, never less
        than it asked, and spread over as long again (or the backoff, if longer): the calls it
        turned away at once then come back spread out, not at once to be turned away again.
        """
        backoff = min(self.max_backoff, self.first_backoff * 2 ** min(attempt - 1, 64))
        if retry_after is None:
            return random.uniform(backoff / 2, backoff)
        return retry_after + random.uniform(0, max(backoff, retry_after))


DEFAULT_RETRIES = RetryPolicy()
NO_RETRIES = RetryPolicy(max_retry_seconds=0)


# The time a last attempt is left before the caller's deadline, at most: enough for an answer
# from a healthy API server and for the rule's result to reach the caller. The create flow stops
# waiting for rules at most half a second before the deadline; this ends the retrying first.
_LAST_ATTEMPT_ROOM_S = 1.0
# A kube-apiserver that was just unreachable (restarting) answers before all of its parts are
# ready: its Service IP allocator, say, refuses creates with a 500 "range is full" until it has
# read its ServiceCIDRs. For this long after any call found the API server unreachable, a 5xx
# is taken as that warm-up and retried like a 503, rather than as the API server's decision.
_WARM_UP_S = 15.0


class RetryClock:
    """How long a call has been retrying: from its first failure on, less the time it then
    spent waiting for an API call slot (waiting for a turn is not trying)."""

    __slots__ = ("_loop", "_since", "_waited")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._since: float | None = None
        self._waited = 0.0

    def failed(self) -> None:
        if self._since is None:
            self._since = self._loop.time()

    def waited(self, seconds: float) -> None:
        if self._since is not None:
            self._waited += seconds

    @property
    def spent(self) -> float:
        if self._since is None:
            return 0.0
        return self._loop.time() - self._since - self._waited


#: One attempt of a call: given the loop time by which it must be over (None: no deadline)
#: and the call's retry clock (to tell it how long the attempt waited for a slot).
Attempt = Callable[[float | None, RetryClock], Awaitable[Json]]


class Retrying:
    """The retry loop, shared by all the calls of one Kube (they share its memory of when the
    API server was last unreachable, and its credentials)."""

    def __init__(
        self,
        policy: RetryPolicy,
        observer: CallObserver,
        credentials: CredentialsReload | None,
    ) -> None:
        self._policy = policy
        self._observer = observer
        self._credentials = credentials
        self._unreachable_at: float | None = None  # loop time a call last found it down

    async def run(self, verb: str, resource: str, attempt: Attempt, timeout: float | None) -> Json:
        """One API call, tried again while the API server's answer says "not now".

        timeout is what remains of the caller's deadline: no attempt and no pause between
        attempts runs past it, and a pause that would end too close to it for another
        attempt to be answered (the last fifth of the time, at most a second) is not started:
        the last error is raised instead, while there is still time to tell the caller why
        rather than just "deadline exceeded". Nor is a pause that would end past the
        policy's retry window.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        room = 0.0 if timeout is None else min(_LAST_ATTEMPT_ROOM_S, timeout / 5)
        policy = self._policy
        clock = RetryClock(loop)
        tries = 1
        reloaded = False
        unanswered = False  # an attempt so far got no answer, and so may have taken effect
        while True:
            generation = self._credentials.generation if self._credentials else 0
            try:
                return await attempt(deadline, clock)
            except KubeUnauthorized as error:
                if self._credentials is None:
                    raise
                if reloaded:
                    raise KubeUnauthorized(
                        f"{error.message} (again after loading them anew): check the "
                        f"kubeconfig, exec plugin or service account token it runs with",
                        status=error.status,
                        reason=error.reason,
                        api_status=error.api_status,
                    ) from error
                reloaded = True
                self._observer.call_retried(verb, resource, "Unauthorized")
                await self._credentials.after(generation, error)
            except KubeError as error:
                error.unanswered_before = unanswered
                unanswered = unanswered or error.may_have_applied
                if error.status is None and error.reason == "Unreachable":
                    self._unreachable_at = loop.time()
                if not is_transient(error) and not self._warming_up(error, loop.time()):
                    raise
                clock.failed()
                pause = policy.pause(tries, error.retry_after)
                if clock.spent + pause > policy.max_retry_seconds:
                    raise
                if deadline is not None and loop.time() + pause + room >= deadline:
                    raise
                self._observer.call_retried(verb, resource, error.reason or str(error.status))
                # No slot is held here: a throttled call must not keep others waiting.
                await asyncio.sleep(pause)
            tries += 1

    def _warming_up(self, error: KubeError, now: float) -> bool:
        """Whether error is a 5xx from an API server that was unreachable moments ago."""
        return (
            error.status is not None
            and error.status >= 500
            and self._unreachable_at is not None
            and now - self._unreachable_at < _WARM_UP_S
        )
