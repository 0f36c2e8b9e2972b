"""A small bounded cache of review answers, each kept for as long as its answer says.

TokenReviews and SubjectAccessReviews are round trips to the API server that would otherwise be
made on every call; a busy caller asks the same question over and over. Concurrent misses for
one key share a single review (so a burst of calls from a new caller costs one review, not one
per call), answers are cached whether they allow or refuse (each for its own time), failures
to get an answer are not cached, and the number of entries is bounded so that a flood of
distinct tokens cannot grow memory without limit (what bounds the reviews such a flood costs
is server.auth.tokens').
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Timed(Generic[V]):
    """An answer and how many seconds it may be reused for (0: not at all)."""

    value: V
    ttl: float


class ReviewCache(Generic[K, V]):
    def __init__(self, *, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._clock = clock
        # Insertion order is age order: the first entries are the oldest.
        self._entries: dict[K, tuple[float, V]] = {}
        self._pending: dict[K, asyncio.Future[Timed[V]]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def pending(self, key: K) -> bool:
        """Whether a review for key is under way (a get() now would share it, not start one)."""
        return key in self._pending

    def cached(self, key: K) -> V | None:
        """The answer for key if it is cached and current, without awaiting anything: the
        common case costs no task and no event-loop round."""
        entry = self._entries.get(key)
        if entry is None or self._clock() >= entry[0]:
            return None
        self.hits += 1
        return entry[1]

    async def get(self, key: K, review: Callable[[], Awaitable[Timed[V]]]) -> V:
        """The cached answer for key, or review()'s, shared with concurrent askers."""
        entry = self._entries.get(key)
        if entry is not None:
            expires, value = entry
            if self._clock() < expires:
                self.hits += 1
                return value
            del self._entries[key]
        task = self._pending.get(key)
        if task is None:
            self.misses += 1
            # A task of its own, so that the first asker going away (a cancelled call) does
            # not cancel the review that the others are waiting for.
            task = asyncio.ensure_future(review())
            self._pending[key] = task
            task.add_done_callback(functools.partial(self._finished, key))
        else:
            self.hits += 1
        return (await asyncio.shield(task)).value

    def _finished(self, key: K, task: asyncio.Future[Timed[V]]) -> None:
        del self._pending[key]
        if task.cancelled():
            return
        # Retrieved here, so a review that failed while nobody waited does not log a warning.
        if task.exception() is None and task.result().ttl > 0:
            self._store(key, task.result())

    def _store(self, key: K, answer: Timed[V]) -> None:
        now = self._clock()
        if len(self._entries) >= self._max_entries:
            for old in [old for old, (expires, _) in self._entries.items() if expires <= now]:
                del self._entries[old]
        while len(self._entries) >= self._max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (now + answer.ttl, answer.value)
