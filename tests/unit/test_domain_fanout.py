"""server.domain.fanout: each job's result as it finishes, the give-up time before the caller's
deadline, and the stand-in results of the jobs that did not finish."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from server.domain.fanout import fan_out, give_up_before, give_up_margin, remaining


async def after(seconds: float, value: str, cancelled: list[str] | None = None) -> str:
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        if cancelled is not None:
            cancelled.append(value)
        raise
    return value


@pytest.mark.parametrize(("budget", "margin"), [(0.1, 0.05), (1.0, 0.1), (3.0, 0.3), (30.0, 0.5)])
def test_the_margin_is_a_tenth_of_the_time_between_50_ms_and_half_a_second(
    budget: float, margin: float
) -> None:
    assert give_up_margin(budget) == pytest.approx(margin)
    assert give_up_before(100.0 + budget, 100.0) == pytest.approx(100.0 + budget - margin)
    assert give_up_before(None, 100.0) is None


async def test_remaining_is_never_zero() -> None:
    loop = asyncio.get_running_loop()
    before = loop.time()
    assert remaining(loop, before - 10) == 0.001  # 0 would mean no timeout to the client
    assert remaining(loop, None) is None


async def test_results_come_as_each_job_finishes() -> None:
    jobs = [after(0.06, "slow"), after(0.0, "fast"), after(0.03, "middle")]
    assert [result async for result in fan_out(jobs)] == ["fast", "middle", "slow"]


async def test_at_give_up_the_unfinished_jobs_are_cancelled_and_stood_in_for() -> None:
    loop = asyncio.get_running_loop()
    cancelled: list[str] = []
    jobs = [after(10, "never", cancelled), after(0.0, "done"), after(10, "nor", cancelled)]

    results = [
        result
        async for result in fan_out(jobs, give_up=loop.time() + 0.1, late=lambda i: f"late {i}")
    ]

    assert results == ["done", "late 0", "late 2"]
    assert sorted(cancelled) == ["never", "nor"]


async def test_no_job_outlives_a_closed_generator() -> None:
    cancelled: list[str] = []
    jobs = [after(0.0, "first"), after(10, "second", cancelled)]
    async with contextlib.aclosing(fan_out(jobs)) as results:
        async for result in results:
            assert result == "first"
            break
    assert cancelled == ["second"]


async def test_give_up_needs_a_stand_in() -> None:
    job = after(0.0, "never started")
    with pytest.raises(ValueError, match="give_up needs late"):
        async for _ in fan_out([job], give_up=0.0):
            pass
    # Closed, not left to warn that it was never awaited: a closed coroutine cannot start.
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        await job
