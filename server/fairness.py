"""Fair sharing of the API call slots between requests, and how many slots there are.

Two problems, two parts.

**Whose turn.** A first-come-first-served semaphore lets a 256-rule request queue 256 calls
ahead of a one-rule request that arrives a moment later, so the small one waits for most of the
big one. Here the slots go round robin between requests instead (`FairSlots`): when a slot
frees up, the next request in turn gets it, and then goes to the back of the line. A request
alone still gets every free slot at once (nobody else is waiting), and two requests each get
about half while both are waiting. Which request a call belongs to is a context variable, set
once per request (see `new_share`) and inherited by the tasks the request starts, so the
Kubernetes adapter's call sites need not pass it along.

**How many at once.** Taking turns at k8sailor's door is not enough when the API server itself
is the bottleneck. Measured on a 2-core machine that runs the API server, etcd and k8sailor: a
256-rule request keeps 32 calls in flight, the API server works on all 32 at once, and a small
request's one create, though it got the very next slot, then waits inside the API server behind
the 31 others: 37 times its latency alone. Past the API server's knee more calls in flight add
only latency, not throughput (Little's law: throughput = in flight / latency), so the extra
ones buy the big request nothing and cost everyone else their wait.

`AdaptiveLimit` keeps the number in flight near that knee, as TCP Vegas and Netflix's
concurrency-limits do: it remembers how long each kind of call takes at low load (its
baseline), and once per round (as many answers as the limit, about one round trip) compares
the round's median latency with it. Latency within 1.5 times the baseline (`tolerance`): the
API server keeps up; while callers are waiting for slots the limit grows (by half when latency
is flat, by one when it has started to rise). Latency beyond that: calls are queueing inside
the API server, and the limit shrinks in proportion (never by more than half a round), down to
`floor`. A 429 or 503 (the API server's own "too many") halves it. `--max-concurrency` stays
the ceiling. Where latency does not grow with load until the API server is really saturated (a real
cluster's API server, remote and with cores to spare) the limit rises to the ceiling within a
few round trips and stays there; on a saturated one it settles where the API server has about
half as many calls waiting as it is working on. Why 1.5 and not 2 (Vegas-like limits use
both): side by side in one run on the shared 2-core machine, a one-rule request beside a
256-rule request took 2.65x its time alone at p50 (p99 2.71x) with 1.5, against 2.88x (p99
6.30x) with 2; 200-rule requests made 0.90x the rate they made with 2 (the median of three
rounds' ratios: 1.29x, 0.90x, 0.80x; load average 7-10, so take it as "about the same").

The limit holds back bursts, not requests: `FairSlots` lets a request with no call in flight
have a slot over the limit (never over the ceiling). A small request beside a big one then
neither waits for a slot nor queues behind 31 of the big one's calls in the API server, only
behind the few the limit lets through; and many one-rule requests at once are served as the
fixed bound served them. Limiting them would only move their queue from the API server to
k8sailor's door, and cost throughput whenever the latency the limit sees is k8sailor's own (a
busy event loop delays every answer, whatever the API server does): measured, one-rule
requests from 32 callers lost a quarter of their rate under the limit before this rule.

The baseline is the median of the last 16 answers to calls made while at most `floor` were in
flight (as close to "no load from us" as k8sailor gets), and of answers under half of it (the
API server got faster). A median, not the minimum: on a shared machine the fastest answer is
an outlier, and 1.5 times it is already a queue of nothing. Answers with many of our calls in
flight never move it up, or it would chase the very queueing it is there to measure. It does
not go stale: when the API server gets slower for good (another client loading it, a bigger
etcd), the old baseline makes that look like queueing, the limit drops to the floor, every
answer there is a low-load one, and the baseline moves to what the API server now takes.

Why not the alternatives alone: a per-request cap on slots, or priority for requests with few
rules left, only choose which call goes next at k8sailor's door, which round robin and the
first-call rule already do; neither shortens the queue inside the API server, which is where
the time went. `--concurrency-limit=fixed` keeps the slots at
--max-concurrency, as before (and as a benchmark's "before" figure).

Nothing here reads a clock: the adapter measures each call and tells the limit, so the tests
drive it with made-up latencies.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import statistics
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final, Protocol

__all__ = [
    "AdaptiveLimit",
    "ConcurrencyLimit",
    "FairSlots",
    "FixedLimit",
    "Share",
    "Ticket",
    "new_share",
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


def current_share() -> Share:
    return _current.get(_BACKGROUND)


@dataclass(frozen=True, slots=True)
class Ticket:
    """What a call knew when it got its slot, for the limit to judge its latency by."""

    share: Share
    in_flight: int  # calls holding a slot once this one got its own, itself included
    at_limit: bool  # that took the last slot: more calls would have gone, had there been room


class ConcurrencyLimit(Protocol):
    """How many slots there are now; told how each call went."""

    @property
    def value(self) -> int: ...

    def answered(self, kind: str, seconds: float, ticket: Ticket) -> None:
        """A call of this kind (say "create services") was answered after `seconds`."""

    def throttled(self, ticket: Ticket) -> None:
        """The API server turned a call away as too much (429, 503)."""


class FixedLimit:
    """Always the same number of slots."""

    def __init__(self, value: int) -> None:
        if value < 1:
            raise ValueError(f"capacity must be at least 1, not {value}")
        self._value = value

    @property
    def value(self) -> int:
        return self._value

    def answered(self, kind: str, seconds: float, ticket: Ticket) -> None:
        pass

    def throttled(self, ticket: Ticket) -> None:
        pass


class AdaptiveLimit:
    """Calls in flight kept near the API server's knee (see the module doc)."""

    def __init__(
        self,
        ceiling: int,
        *,
        floor: int = 2,
        initial: int = 4,
        tolerance: float = 1.5,
        min_round: int = 4,
        memory: int = 16,
    ) -> None:
        if ceiling < 1:
            raise ValueError(f"capacity must be at least 1, not {ceiling}")
        if tolerance <= 1:
            raise ValueError(f"tolerance must be more than 1, not {tolerance}")
        self.ceiling = ceiling
        self.floor = max(1, min(floor, ceiling))
        self.tolerance = tolerance
        # Latency within this much of the baseline is flat: grow fast. Up to `_steady`, the
        # queue is building but short: grow by one. Between that and tolerance: hold.
        self._flat = 1 + (tolerance - 1) / 4
        self._steady = 1 + (tolerance - 1) / 2
        self._min_round = min_round
        self._value = max(self.floor, min(initial, ceiling))
        # Per kind of call: the latest answers to calls made at low load, and their median.
        self._memory = memory
        self._unloaded: dict[str, deque[float]] = {}
        self._baseline: dict[str, float] = {}
        self._ratios: list[float] = []
        self._answers = 0
        self._wanted_more = False
        self._throttled = False

    @property
    def value(self) -> int:
        return self._value

    def baseline(self, kind: str) -> float | None:
        """Seconds a call of this kind takes when little else is in flight, as far as known."""
        return self._baseline.get(kind)

    def answered(self, kind: str, seconds: float, ticket: Ticket) -> None:
        seconds = max(seconds, 1e-6)
        baseline = self._baseline.get(kind)
        if baseline is None or ticket.in_flight <= self.floor or seconds < baseline / 2:
            recent = self._unloaded.get(kind)
            if recent is None:
                recent = self._unloaded[kind] = deque(maxlen=self._memory)
            recent.append(seconds)
            baseline = self._baseline[kind] = statistics.median(recent)
        self._ratios.append(seconds / baseline)
        self._count(ticket)

    def throttled(self, ticket: Ticket) -> None:
        self._throttled = True
        self._count(ticket)

    def _count(self, ticket: Ticket) -> None:
        self._answers += 1
        self._wanted_more = self._wanted_more or ticket.at_limit
        if self._answers >= max(self._value, self._min_round):
            self._end_round()

    def _end_round(self) -> None:
        limit = float(self._value)
        if self._throttled:
            limit /= 2
        elif self._ratios:
            slowdown = statistics.median(self._ratios)
            if slowdown > self.tolerance:
                limit *= max(0.5, self.tolerance / slowdown)
            elif self._wanted_more and slowdown <= self._flat:
                limit = math.ceil(limit * 1.5)
            elif self._wanted_more and slowdown <= self._steady:
                limit += 1
        self._value = max(self.floor, min(self.ceiling, int(limit)))
        self._ratios.clear()
        self._answers = 0
        self._wanted_more = False
        self._throttled = False


class FairSlots:
    """Slots for API calls, served round robin by share.

    At most `limit.value` are held at once, except that a share with nothing in flight gets
    a slot at once while fewer than `capacity` are held (see the module doc).
    """

    def __init__(self, capacity: int, limit: ConcurrencyLimit | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self._capacity = capacity
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
        granted: asyncio.Future[Ticket] = asyncio.get_running_loop().create_future()
        queue = self._waiting.get(owner)
        if queue is None:
            queue = self._waiting[owner] = deque()
        queue.append(granted)
        try:
            return await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                # The slot was handed over just as the waiter was cancelled: pass it on.
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
        if not queue:
            del self._waiting[owner]
