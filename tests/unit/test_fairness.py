"""Fair sharing of API slots: who gets a freed slot, in what order (no clocks involved)."""

from __future__ import annotations

import asyncio

import pytest

from server.fairness import FairSlots, Share, current_share, new_share


async def _settle() -> None:
    """Let every task that can run do so (a few loop turns)."""
    for _ in range(5):
        await asyncio.sleep(0)


class Recorder:
    """Waiters that write down, in order, which share got a slot, and hold it until told."""

    def __init__(self, slots: FairSlots) -> None:
        self.slots = slots
        self.granted: list[str] = []
        self.tasks: list[asyncio.Task[None]] = []

    def want(self, share: Share, count: int = 1) -> None:
        for _ in range(count):
            self.tasks.append(asyncio.create_task(self._hold(share)))

    async def _hold(self, share: Share) -> None:
        await self.slots.acquire(share)
        self.granted.append(share.name)
        # Held until the test releases it by hand.

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
    slots.release()
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
        slots.release()
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
        slots.release()
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
    slots.release()
    await _settle()
    assert recorder.granted == ["first", "last"]
    slots.release()
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
    slots.release()  # the slot goes to "unlucky"'s future...
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


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity must be at least 1"):
        FairSlots(0)
