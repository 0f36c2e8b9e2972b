"""Fair sharing of the process-wide API call slots between the requests that want them.

A first-come-first-served semaphore lets a 256-rule request queue 256 calls ahead of a one-rule
request that arrives a moment later, so the small one waits for most of the big one. Here the
slots go round robin between requests instead: when a slot frees up, the next request in turn
gets it, and then goes to the back of the line. A request alone still gets every free slot at
once (nobody else is waiting), and two requests each get about half while both are waiting.

Which request a call belongs to is a context variable, set once per request (see `new_share`)
and inherited by the tasks the request starts, so the Kubernetes adapter's call sites need not
pass it along.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

__all__ = ["FairSlots", "Share", "new_share"]


class Share:
    """One requester's place in the rotation; compared by identity."""

    __slots__ = ("name",)

    def __init__(self, name: str = "") -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Share({self.name!r})"


# Calls made outside any request (the Deployment cache's own list, a start-up check) share one
# place in the rotation.
_BACKGROUND: Final = Share("background")
_current: contextvars.ContextVar[Share] = contextvars.ContextVar("k8sailor_share")


def new_share(name: str = "") -> Share:
    """Give the calls made from now on in this context (and in the tasks it starts) a share of
    their own. Each gRPC call runs in its own task with its own copy of the context, so the
    share is the request's for as long as the request runs, and no other request sees it."""
    share = Share(name)
    _current.set(share)
    return share


def current_share() -> Share:
    return _current.get(_BACKGROUND)


class FairSlots:
    """At most `capacity` holders at once; waiters are served round robin by share."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self._free = capacity
        # Shares with waiters, in turn order (a dict keeps insertion order; a share that got a
        # slot is moved to the end). Each holds its waiters' futures, oldest first.
        self._waiting: dict[Share, deque[asyncio.Future[None]]] = {}

    @property
    def free(self) -> int:
        return self._free

    @asynccontextmanager
    async def slot(self, share: Share | None = None) -> AsyncIterator[None]:
        """Hold one slot for the block, waiting for this share's turn if none is free."""
        await self.acquire(share)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, share: Share | None = None) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        owner = share if share is not None else current_share()
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiting.get(owner)
        if queue is None:
            queue = self._waiting[owner] = deque()
        queue.append(granted)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                # The slot was handed over just as the waiter was cancelled: pass it on.
                self.release()
            else:
                self._forget(owner, granted)
            raise

    def release(self) -> None:
        """Hand the freed slot to the next share in turn, or keep it free."""
        while self._waiting:
            owner = next(iter(self._waiting))
            queue = self._waiting.pop(owner)
            granted = queue.popleft()
            if queue:
                self._waiting[owner] = queue  # to the back of the line
            if not granted.done():
                granted.set_result(None)
                return
        self._free += 1

    def _forget(self, owner: Share, granted: asyncio.Future[None]) -> None:
        queue = self._waiting.get(owner)
        if queue is None:
            return
        try:
            queue.remove(granted)
        except ValueError:
            return
        if not queue:
            del self._waiting[owner]
