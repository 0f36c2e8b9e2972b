"""Fair sharing of the API call slots between requests: whose turn it is.

A first-come-first-served semaphore lets a 256-rule request queue 256 calls ahead of a one-rule
request that arrives a moment later, so the small one waits for most of the big one. Here the
slots go round robin between requests instead (`FairSlots`): when a slot frees up, the next
request in turn gets it, and then goes to the back of the line. A request alone still gets every
free slot at once (nobody else is waiting), and two requests each get about half while both are
waiting. Which request a call belongs to is a context variable, set once per request (see
`new_share`) and inherited by the tasks the request starts, so the Kubernetes adapter's call
sites need not pass it along. The edge (server.api.edge) sets it for every RPC: where the caller is
known, the share is the caller's (`Shares`), so that a caller's many requests at once take one
turn between them, not one each.

How many slots there are at a time is `kube.limits`' job: a fixed number, or an adaptive limit
that keeps calls from queueing inside the API server.

The limit holds back bursts, not requests: `FairSlots` lets a request with no call in flight
have a slot over the limit (never over the ceiling). A small request beside a big one then
neither waits for a slot nor queues behind 31 of the big one's calls in the API server, only
behind the few the limit lets through; and many one-rule requests at once are served as the
fixed bound served them. Limiting them would only move their queue from the API server to
k8sailor's door, and cost throughput whenever the latency the limit sees is k8sailor's own (a
busy event loop delays every answer, whatever the API server does): measured, one-rule requests
from 32 callers lost a quarter of their rate under the limit before this rule.

Why not the alternatives alone: a per-request cap on slots, or priority for requests with few
rules left, only choose which call goes next at k8sailor's door, which round robin and the
first-call rule already do; neither shortens the queue inside the API server, which is where the
time went. `--concurrency-limit=fixed` keeps the slots at --max-concurrency, as before (and as a
benchmark's "before" figure).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

from server.kube.limits import ConcurrencyLimit, FixedLimit

__all__ = [
    "Crowded",
    "FairSlots",
    "Share",
    "Shares",
    "Ticket",
    "current_share",
    "new_share",
    "use_share",
]


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


def use_share(share: Share) -> None:
    """Make the calls made from now on in this context take their turns as share: for work
    done in a task of its own on behalf of someone who has a share of their own (a review for
    a connection or a caller, see `Shares`), so that it does not queue as background work."""
    _current.set(share)


def current_share() -> Share:
    return _current.get(_BACKGROUND)


class Shares:
    """One share per key (a connection, a caller), the same one for as long as the key is
    remembered: the most recently used `max_entries` keys are. A key forgotten and seen again
    gets a new share, which costs nothing but that its next call is taken as its first."""

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries}")
        self._max_entries = max_entries
        self._shares: dict[str, Share] = {}  # least recently used first

    def __len__(self) -> int:
        return len(self._shares)

    def get(self, key: str) -> Share:
        share = self._shares.pop(key, None)
        if share is None:
            share = Share(key)
            if len(self._shares) >= self._max_entries:
                del self._shares[next(iter(self._shares))]
        self._shares[key] = share
        return share


class Crowded(Exception):
    """Turned away: as many calls were waiting for a slot as FairSlots lets wait."""


@dataclass(frozen=True, slots=True)
class Ticket:
    """What a call knew when it got its slot, for the limit to judge its latency by."""

    share: Share
    in_flight: int  # calls holding a slot once this one got its own, itself included
    at_limit: bool  # that took the last slot: more calls would have gone, had there been room


class FairSlots:
    """Slots for API calls, served round robin by share.

    At most `limit.value` are held at once, except that a share with nothing in flight gets
    a slot at once while fewer than `capacity` are held (see the module doc).

    With `max_waiting`, at most that many calls wait: one more is turned away (Crowded), and
    which one is the newest waiter of the share with the most waiting (as a router drops from
    its longest queue), so that a share that floods the queue cannot keep the others out of
    it; the newcomer itself when its own share has as many waiting as any.
    """

    def __init__(
        self,
        capacity: int,
        limit: ConcurrencyLimit | None = None,
        *,
        max_waiting: int | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        if max_waiting is not None and max_waiting < 0:
            raise ValueError(f"max_waiting must be at least 0, not {max_waiting}")
        self._capacity = capacity
        self._max_waiting = max_waiting
        self._waiters = 0  # futures in self._waiting, all shares together
        self._limit: ConcurrencyLimit = limit if limit is not None else FixedLimit(capacity)
        self._held = 0
        self._holding: dict[Share, int] = {}  # slots held, per share that holds any
        # Shares with waiters, in turn order (a dict keeps insertion order; a share that got a
        # slot is moved to the end). Each holds its waiters' futures, oldest first.
        self._waiting: dict[Share, deque[asyncio.Future[Ticket]]] = {}

    @property
    def limit(self) -> int:
        return min(self._limit.value, self._capacity)

    @property
    def held(self) -> int:
        return self._held

    @property
    def free(self) -> int:
        return max(0, self.limit - self._held)

    @property
    def waiting(self) -> int:
        return self._waiters

    @asynccontextmanager
    async def slot(self, share: Share | None = None) -> AsyncIterator[Ticket]:
        """Hold one slot for the block, waiting for this share's turn if none is free."""
        ticket = await self.acquire(share)
        try:
            yield ticket
        finally:
            self.release(ticket)

    async def acquire(self, share: Share | None = None) -> Ticket:
        owner = share if share is not None else current_share()
        if self._held < self.limit and not self._waiting:
            return self._take(owner)
        if owner not in self._holding and self._held < self._capacity:
            return self._take(owner)
        if self._max_waiting is not None and self._waiters >= self._max_waiting:
            self._make_room(owner)
        granted: asyncio.Future[Ticket] = asyncio.get_running_loop().create_future()
        queue = self._waiting.get(owner)
        if queue is None:
            queue = self._waiting[owner] = deque()
        queue.append(granted)
        self._waiters += 1
        try:
            return await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                # The slot was handed over just as the waiter was cancelled: pass it on
                # (unless it was turned away instead: then there is nothing to pass on).
                if granted.exception() is None:
                    self.release(granted.result())
            else:
                self._forget(owner, granted)
            raise

    def release(self, ticket: Ticket) -> None:
        """Give the slot back; the next share in turn gets it if the limit allows."""
        self._held -= 1
        left = self._holding[ticket.share] - 1
        if left:
            self._holding[ticket.share] = left
        else:
            del self._holding[ticket.share]
        self._grant()

    def answered(self, ticket: Ticket, kind: str, seconds: float) -> None:
        """Tell the limit how a call went (before its slot is released)."""
        self._limit.answered(kind, seconds, ticket)
        self._grant()  # the limit may have grown

    def throttled(self, ticket: Ticket) -> None:
        self._limit.throttled(ticket)

    def _take(self, share: Share) -> Ticket:
        self._held += 1
        self._holding[share] = self._holding.get(share, 0) + 1
        # Waiters left over, or no slot left: more calls would have gone, had there been room.
        at_limit = self._held >= self.limit or bool(self._waiting)
        return Ticket(share=share, in_flight=self._held, at_limit=at_limit)

    def _grant(self) -> None:
        while self._waiting and self._held < self._capacity:
            if self._held < self.limit:
                owner = next(iter(self._waiting))  # whose turn it is
            else:
                # Over the limit, only a share with nothing in flight may go.
                idle = next((s for s in self._waiting if s not in self._holding), None)
                if idle is None:
                    return
                owner = idle
            queue = self._waiting.pop(owner)
            granted = queue.popleft()
            self._waiters -= 1
            if queue:
                self._waiting[owner] = queue  # to the back of the line
            if not granted.done():
                granted.set_result(self._take(owner))

    def _forget(self, owner: Share, granted: asyncio.Future[Ticket]) -> None:
        queue = self._waiting.get(owner)
        if queue is None:
            return
        try:
            queue.remove(granted)
        except ValueError:
            return
        self._waiters -= 1
        if not queue:
            del self._waiting[owner]

    def _make_room(self, newcomer: Share) -> None:
        """Turn away one waiter, the newest of the longest queue, or raise Crowded when the
        newcomer's own queue is as long as any (see the class doc)."""
        own = len(self._waiting.get(newcomer, ()))
        longest = max(self._waiting, key=lambda share: len(self._waiting[share]), default=None)
        if longest is None or len(self._waiting[longest]) <= own:
            raise Crowded(f"{self._waiters} calls are waiting already, the most that may")
        queue = self._waiting[longest]
        turned_away = queue.pop()
        self._waiters -= 1
        if not queue:
            del self._waiting[longest]
        if turned_away.done():  # cancelled, and on its way out anyway
            return
        turned_away.set_exception(
            Crowded(f"{self._waiters + 1} calls were waiting, the most that may, and this "
                    f"one's share had the most of them")
        )  # fmt: skip
