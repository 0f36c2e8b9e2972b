"""How many API calls may be in flight at a time: a fixed number, or an adaptive limit.

Taking turns at k8sailor's door (`server.kube.fairness`) is not enough when the API server itself is
the bottleneck. Measured on a 2-core machine that runs the API server, etcd and k8sailor: a
256-rule request keeps 32 calls in flight, the API server works on all 32 at once, and a small
request's one create, though it got the very next slot, then waits inside the API server behind
the 31 others: 37 times its latency alone. Past the API server's knee more calls in flight add
only latency, not throughput (Little's law: throughput = in flight / latency), so the extra ones
buy the big request nothing and cost everyone else their wait.

`AdaptiveLimit` keeps the number in flight near that knee, as TCP Vegas and Netflix's
concurrency-limits do: it remembers how long each kind of call takes at low load (its baseline),
and once per round (as many answers as the limit, about one round trip) compares the round's
median latency with it. Latency within 1.5 times the baseline (`tolerance`): the API server
keeps up; while callers are waiting for slots the limit grows (by half when latency is flat, by
one when it has started to rise). Latency beyond that: calls are queueing inside the API server,
and the limit shrinks in proportion (never by more than half a round), down to `floor`. A 429 or
503 (the API server's own "too many") halves it. `--max-concurrency` stays the ceiling. Where
latency does not grow with load until the API server is really saturated (a real cluster's API
server, remote and with cores to spare) the limit rises to the ceiling within a few round trips
and stays there; on a saturated one it settles where the API server has about half as many calls
waiting as it is working on. Why 1.5 and not 2 (Vegas-like limits use both): side by side in one
run on the shared 2-core machine, a one-rule request beside a 256-rule request took 2.65x its
time alone at p50 (p99 2.71x) with 1.5, against 2.88x (p99 6.30x) with 2; 200-rule requests made
0.90x the rate they made with 2 (the median of three rounds' ratios: 1.29x, 0.90x, 0.80x; load
average 7-10, so take it as "about the same").

The baseline is the median of the last 16 answers to calls made while at most `floor` were in
flight (as close to "no load from us" as k8sailor gets), and of answers under half of it (the
API server got faster). A median, not the minimum: on a shared machine the fastest answer is an
outlier, and 1.5 times it is already a queue of nothing. Answers with many of our calls in
flight never move it up, or it would chase the very queueing it is there to measure. It does not
go stale: when the API server gets slower for good (another client loading it, a bigger etcd),
the old baseline makes that look like queueing, the limit drops to the floor, every answer there
is a low-load one, and the baseline moves to what the API server now takes.

Nothing here reads a clock: the adapter measures each call and tells the limit, so the tests
drive it with made-up latencies.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from typing import Protocol

__all__ = ["AdaptiveLimit", "CallLoad", "ConcurrencyLimit", "FixedLimit"]


class CallLoad(Protocol):
    """What a limit needs to know of the load a call was sent under: fairness' Ticket is one.

    Defined here, not imported from server.kube.fairness, so that imports run one way: the
    slots (fairness) use a limit, and a limit knows nothing of whose turn it was.
    """

    @property
    def in_flight(self) -> int:
        """Calls holding a slot once this one got its own, itself included."""
        ...

    @property
    def at_limit(self) -> bool:
        """That call took the last slot: more would have gone, had there been room."""
        ...


class ConcurrencyLimit(Protocol):
    """How many slots there are now; told how each call went."""

    @property
    def value(self) -> int: ...

    def answered(self, kind: str, seconds: float, ticket: CallLoad) -> None:
        """A call of this kind (say "create services") was answered after `seconds`."""

    def throttled(self, ticket: CallLoad) -> None:
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

    def answered(self, kind: str, seconds: float, ticket: CallLoad) -> None:
        pass

    def throttled(self, ticket: CallLoad) -> None:
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

    def answered(self, kind: str, seconds: float, ticket: CallLoad) -> None:
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

    def throttled(self, ticket: CallLoad) -> None:
        self._throttled = True
        self._count(ticket)

    def _count(self, ticket: CallLoad) -> None:
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
