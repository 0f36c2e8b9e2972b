"""Fair sharing of API slots: who gets a freed slot, in what order (no clocks involved)."""

from __future__ import annotations

import asyncio

import pytest

from server.kube.fairness import (
    Crowded,
    FairSlots,
    Share,
    Shares,
    Ticket,
    current_share,
    new_share,
    use_share,
)
from server.kube.limits import AdaptiveLimit


async def _settle() -> None:
    """Let every task that can run do so (a few loop turns)."""
    for _ in range(5):
        await asyncio.sleep(0)


class Recorder:
    """Waiters that write down, in order, which share got a slot, and hold it until told."""

    def __init__(self, slots: FairSlots) -> None:
        self.slots = slots
        self.granted: list[str] = []
        self.held: list[Ticket] = []
        self.tasks: list[asyncio.Task[None]] = []

    def want(self, share: Share, count: int = 1) -> None:
        for _ in range(count):
            self.tasks.append(asyncio.create_task(self._hold(share)))

    async def _hold(self, share: Share) -> None:
        self.held.append(await self.slots.acquire(share))
        self.granted.append(share.name)
        # Held until the test releases it.

    def release(self) -> None:
        """Give back the slot held longest."""
        self.slots.release(self.held.pop(0))

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def test_a_request_alone_gets_every_slot_at_once() -> None:
    slots = FairSlots(4)
    recorder = Recorder(slots)
    recorder.want(Share("big"), 6)
    await _settle()
    assert recorder.granted == ["big"] * 4
    assert slots.free == 0
    recorder.release()
    await _settle()
    assert recorder.granted == ["big"] * 5
    await recorder.close()


async def test_a_small_request_gets_the_next_turn_not_the_end_of_the_queue() -> None:
    slots = FairSlots(2)
    recorder = Recorder(slots)
    big, small = Share("big"), Share("small")
    recorder.want(big, 100)
    await _settle()
    recorder.want(small, 1)
    await _settle()
    assert recorder.granted == ["big", "big"]
    # The big request's 98 waiting calls came first, but the turns alternate.
    for _ in range(3):
        recorder.release()
        await _settle()
    assert recorder.granted == ["big", "big", "big", "small", "big"]
    await recorder.close()


async def test_turns_go_round_robin_between_waiting_requests() -> None:
    slots = FairSlots(1)
    recorder = Recorder(slots)
    a, b, c = Share("a"), Share("b"), Share("c")
    recorder.want(a, 4)
    await _settle()
    recorder.want(b, 3)
    recorder.want(c, 1)
    await _settle()
    for _ in range(7):
        recorder.release()
        await _settle()
    assert recorder.granted == ["a", "a", "b", "c", "a", "b", "a", "b"]
    await recorder.close()


async def test_a_cancelled_waiter_gives_up_its_place_and_loses_no_slot() -> None:
    slots = FairSlots(1)
    recorder = Recorder(slots)
    first, gone, last = Share("first"), Share("gone"), Share("last")
    recorder.want(first)
    await _settle()
    recorder.want(gone)
    recorder.want(last)
    await _settle()
    recorder.tasks[1].cancel()
    await _settle()
    recorder.release()
    await _settle()
    assert recorder.granted == ["first", "last"]
    recorder.release()
    await _settle()
    assert slots.free == 1
    await recorder.close()


async def test_a_slot_handed_to_a_waiter_cancelled_at_that_moment_is_passed_on() -> None:
    slots = FairSlots(1)
    recorder = Recorder(slots)
    recorder.want(Share("holder"))
    await _settle()
    recorder.want(Share("unlucky"))
    recorder.want(Share("next"))
    await _settle()
    recorder.release()  # the slot goes to "unlucky"'s future...
    recorder.tasks[1].cancel()  # ...which is cancelled before it runs
    await _settle()
    assert recorder.granted == ["holder", "next"]
    assert slots.free == 0
    await recorder.close()


async def test_the_slot_context_manager_releases_on_error() -> None:
    slots = FairSlots(1)
    with pytest.raises(RuntimeError):
        async with slots.slot(Share("x")):
            raise RuntimeError("boom")
    assert slots.free == 1


async def test_tasks_started_by_a_request_carry_its_share() -> None:
    async def inner() -> Share:
        return current_share()

    async def request() -> tuple[Share, Share]:
        share = new_share("r")
        return share, await asyncio.create_task(inner())

    mine, seen = await asyncio.create_task(request())
    assert seen is mine
    assert current_share() is not mine


async def test_use_share_gives_a_task_a_share_that_exists_already() -> None:
    mine = Share("connection")

    async def review() -> Share:
        use_share(mine)
        return current_share()

    assert await asyncio.create_task(review()) is mine
    assert current_share() is not mine  # the task's own context only


def test_shares_gives_the_same_share_for_a_key_and_forgets_the_least_recently_used() -> None:
    shares = Shares(max_entries=2)
    a, b = shares.get("a"), shares.get("b")
    assert shares.get("a") is a  # a is now the most recently used
    shares.get("c")  # b goes
    assert len(shares) == 2
    assert shares.get("a") is a
    assert shares.get("b") is not b


async def _outcome(task: asyncio.Task[None]) -> str:
    try:
        await task
    except Crowded:
        return "crowded"
    return "done"


async def test_beyond_max_waiting_the_longest_queue_loses_its_newest_waiter() -> None:
    slots = FairSlots(1, max_waiting=4)
    recorder = Recorder(slots)
    flood, other = Share("flood"), Share("other")
    recorder.want(Share("holder"))
    await _settle()
    recorder.want(flood, 4)  # the queue is full
    await _settle()
    recorder.want(other)  # ...and room is made for it from the flood's share
    await _settle()
    assert slots.waiting == 4
    newest_flood = recorder.tasks[4]
    assert newest_flood.done()
    assert await _outcome(newest_flood) == "crowded"
    # One more of the flood's own is turned away at once: its share is the longest.
    with pytest.raises(Crowded, match="4 calls are waiting already"):
        await slots.acquire(flood)
    for _ in range(4):
        recorder.release()
        await _settle()
    assert recorder.granted == ["holder", "flood", "other", "flood", "flood"]
    assert slots.waiting == 0
    await recorder.close()


async def test_a_newcomer_is_turned_away_when_its_share_has_as_many_waiting_as_any() -> None:
    slots = FairSlots(1, max_waiting=2)
    recorder = Recorder(slots)
    a, b = Share("a"), Share("b")
    recorder.want(Share("holder"))
    await _settle()
    recorder.want(a)
    recorder.want(b)
    await _settle()
    with pytest.raises(Crowded):
        await slots.acquire(b)  # b has 1 waiting, as many as a
    assert slots.waiting == 2
    await recorder.close()
    assert slots.waiting == 0


async def test_a_waiter_turned_away_and_cancelled_at_once_loses_no_slot() -> None:
    slots = FairSlots(1, max_waiting=2)
    recorder = Recorder(slots)
    recorder.want(Share("holder"))
    await _settle()
    flood = Share("flood")
    recorder.want(flood, 2)
    await _settle()
    waiter = asyncio.create_task(slots.acquire(Share("other")))
    await asyncio.sleep(0)  # the waiter has turned the flood's newest away...
    recorder.tasks[2].cancel()  # ...which is cancelled before it runs
    await _settle()
    assert recorder.tasks[2].cancelled()
    recorder.release()
    await _settle()
    assert recorder.granted == ["holder", "flood"]
    recorder.release()
    await _settle()
    slots.release(await waiter)
    assert slots.held == 0
    assert slots.waiting == 0
    await recorder.close()


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity must be at least 1"):
        FairSlots(0)


# --- the adaptive limit: driven with made-up latencies, no clock -----------------------------

CREATE = "create services"
SOMEONE = Share("someone")


def _round(limit: AdaptiveLimit, seconds: float, *, in_flight: int | None = None) -> None:
    """One round of answers (as many as the limit, at least 4), all taking `seconds`, sent
    with every slot taken and callers waiting for more."""
    ticket = Ticket(SOMEONE, in_flight=in_flight or limit.value, at_limit=True)
    for _ in range(max(limit.value, 4)):
        limit.answered(CREATE, seconds, ticket)


def _at_low_load(limit: AdaptiveLimit, seconds: float, count: int = 4) -> None:
    for _ in range(count):
        limit.answered(CREATE, seconds, Ticket(SOMEONE, in_flight=1, at_limit=False))


def test_the_limit_grows_to_the_ceiling_while_latency_stays_flat() -> None:
    # A remote API server with cores to spare: 10 ms whatever is in flight.
    limit = AdaptiveLimit(32)
    assert limit.value == 4
    seen = []
    for _ in range(10):
        _round(limit, 0.010)
        seen.append(limit.value)
    assert seen[:4] == [6, 9, 14, 21]
    assert seen[-1] == 32


def test_the_limit_shrinks_when_calls_queue_inside_the_api_server() -> None:
    # A saturated API server: latency in proportion to what is in flight beyond 3.
    limit = AdaptiveLimit(32, initial=32)
    _at_low_load(limit, 0.010)
    for _ in range(20):
        _round(limit, 0.010 * max(1.0, limit.value / 3))
    # It settles where latency is about 1.5 times the baseline: 3 calls worked on, 1-2 waiting.
    assert 3 <= limit.value <= 5


def test_the_limit_shrinks_by_at_most_half_a_round_and_never_below_the_floor() -> None:
    limit = AdaptiveLimit(32, initial=32, floor=2)
    _at_low_load(limit, 0.001)
    _round(limit, 1.0, in_flight=32)  # a thousand times slower
    assert limit.value == 16
    for _ in range(10):
        _round(limit, 1.0, in_flight=32)
    assert limit.value == 2


def test_the_limit_holds_when_latency_has_risen_a_little() -> None:
    limit = AdaptiveLimit(32, initial=10)  # tolerance 1.5
    _at_low_load(limit, 0.010)
    assert limit.value == 10
    _round(limit, 0.014)  # between 1.25 and 1.5 times the baseline: neither grow nor shrink
    assert limit.value == 10
    _round(limit, 0.012)  # rising, but a short queue: one more
    assert limit.value == 11


def test_the_limit_does_not_grow_without_callers_waiting_for_slots() -> None:
    limit = AdaptiveLimit(32)
    for _ in range(10):
        for _ in range(4):
            limit.answered(CREATE, 0.010, Ticket(SOMEONE, in_flight=2, at_limit=False))
    assert limit.value == 4


def test_throttling_halves_the_limit() -> None:
    limit = AdaptiveLimit(32, initial=16)
    limit.throttled(Ticket(SOMEONE, in_flight=16, at_limit=True))
    _round(limit, 0.010)
    assert limit.value == 8


def test_a_stale_baseline_is_measured_again_at_the_floor() -> None:
    # The API server got slower for good (someone else's load): 10 ms became 50 ms. The old
    # baseline makes that look like queueing, the limit drops to the floor, and there the
    # answers (few calls in flight) move the baseline up, so the limit can grow again.
    limit = AdaptiveLimit(32, initial=16, floor=2)
    _at_low_load(limit, 0.010)
    for _ in range(100):
        _round(limit, 0.050)
    baseline = limit.baseline(CREATE)
    assert baseline is not None
    assert 0.050 / limit.tolerance < baseline <= 0.050  # 50 ms no longer looks like queueing
    assert limit.value == 32


def test_answers_with_many_calls_in_flight_do_not_raise_the_baseline() -> None:
    limit = AdaptiveLimit(32, initial=16)
    _at_low_load(limit, 0.010)
    for _ in range(3):
        _round(limit, 0.500, in_flight=16)
    assert limit.baseline(CREATE) == 0.010


def test_each_kind_of_call_has_its_own_baseline() -> None:
    # Reads are faster than creates; creates are not queueing because reads are fast.
    limit = AdaptiveLimit(32, initial=8)
    ticket = Ticket(SOMEONE, in_flight=8, at_limit=True)
    for _ in range(20):
        limit.answered("get deployments", 0.002, ticket)
        limit.answered(CREATE, 0.012, ticket)
    assert limit.value > 8


async def test_slots_follow_the_limit_as_it_grows_and_shrinks() -> None:
    limit = AdaptiveLimit(8, initial=2, floor=1, min_round=1)
    slots = FairSlots(8, limit)
    recorder = Recorder(slots)
    recorder.want(Share("big"), 20)
    await _settle()
    assert len(recorder.granted) == 2
    # Flat latency: the limit grows, and the waiting calls get the new slots at once.
    ticket = Ticket(SOMEONE, in_flight=2, at_limit=True)
    slots.answered(ticket, CREATE, 0.010)
    slots.answered(ticket, CREATE, 0.010)
    await _settle()
    assert slots.limit == 3
    assert len(recorder.granted) == 3
    # Slow answers: the limit shrinks; nothing in flight is taken back, but freed slots are
    # not handed on until fewer than the limit are held.
    for _ in range(3):
        slots.answered(Ticket(SOMEONE, in_flight=3, at_limit=True), CREATE, 0.100)
    assert slots.limit == 1
    assert slots.held == 3
    recorder.release()
    recorder.release()
    await _settle()
    assert slots.held == 1
    assert len(recorder.granted) == 3
    recorder.release()
    await _settle()
    assert len(recorder.granted) == 4
    await recorder.close()


async def test_tickets_say_how_many_were_in_flight_and_whether_more_wanted_to_go() -> None:
    slots = FairSlots(2)
    first = await slots.acquire(SOMEONE)
    assert first == Ticket(SOMEONE, in_flight=1, at_limit=False)
    second = await slots.acquire(SOMEONE)
    assert second == Ticket(SOMEONE, in_flight=2, at_limit=True)
    slots.release(first)
    slots.release(second)
    assert (slots.held, slots.free) == (0, 2)


async def test_a_request_with_nothing_in_flight_gets_a_slot_over_the_limit() -> None:
    # The limit holds back a burst; a small request's first call does not wait behind it.
    slots = FairSlots(4, AdaptiveLimit(4, initial=2))
    recorder = Recorder(slots)
    recorder.want(Share("big"), 10)
    await _settle()
    assert recorder.granted == ["big", "big"]
    recorder.want(Share("small"), 2)
    await _settle()
    assert recorder.granted == ["big", "big", "small"]  # its second call waits its turn
    assert slots.held == 3
    recorder.release()  # a big one's: still over the limit, so nobody goes
    await _settle()
    assert recorder.granted == ["big", "big", "small"]
    for _ in range(2):  # under the limit again: turns as ever, big's first (it waited first)
        recorder.release()
        await _settle()
    assert recorder.granted == ["big", "big", "small", "big", "small"]
    await recorder.close()


async def test_many_one_call_requests_go_at_once_up_to_the_capacity_whatever_the_limit() -> None:
    slots = FairSlots(4, AdaptiveLimit(4, initial=1, floor=1))
    recorder = Recorder(slots)
    for index in range(6):
        recorder.want(Share(f"r{index}"))
    await _settle()
    assert recorder.granted == ["r0", "r1", "r2", "r3"]
    recorder.release()
    await _settle()
    assert recorder.granted == ["r0", "r1", "r2", "r3", "r4"]
    await recorder.close()
