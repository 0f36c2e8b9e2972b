"""Running the lifecycle flows' per-Service jobs against the caller's deadline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Sequence
from typing import TypeVar

T = TypeVar("T")


def remaining(loop: asyncio.AbstractEventLoop, deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return max(deadline - loop.time(), 0.001)


def give_up_at(loop: asyncio.AbstractEventLoop, seconds_left: float | None) -> float | None:
    """When to stop waiting for the API server, in loop.time() terms, so that the results of
    what did not finish still reach the caller before its deadline: a tenth of the time left
    early, at least 50 ms and at most half a second, as the exposer does."""
    if seconds_left is None:
        return None
    return loop.time() + seconds_left - min(max(seconds_left * 0.1, 0.05), 0.5)


async def ready(result: T) -> T:
    return result


async def as_completed(jobs: Sequence[Awaitable[T]]) -> AsyncGenerator[T, None]:
    """Each job's result as soon as it is known; no job outlives the generator."""
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        for next_done in asyncio.as_completed(tasks):
            yield await next_done
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
