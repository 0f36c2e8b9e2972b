"""Fan-out with deadlines, for every flow that runs one job per rule (or per Service): how
long an API call may take, when to stop waiting, and the jobs' results as they finish.

Deadlines are in loop.time() terms. The caller's deadline closes its stream, so a flow gives
up a little before it (give_up_before) to write the results of what did not finish."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def remaining(loop: asyncio.AbstractEventLoop, deadline: float | None) -> float | None:
    """The time left for an API call before deadline (None: no deadline); never 0, which
    the client library would read as no timeout."""
    if deadline is None:
        return None
    return max(deadline - loop.time(), 0.001)


def give_up_margin(budget: float) -> float:
    """How long before the caller's deadline to stop waiting and write the unfinished jobs'
    results, so they reach the caller before its deadline closes the stream: a tenth of the
    time the request was given, at least 50 ms (a busy host) and at most half a second."""
    return min(max(budget * 0.1, 0.05), 0.5)


def give_up_before(deadline: float | None, started: float) -> float | None:
    """When a request that started at started, with the caller's deadline, stops waiting."""
    if deadline is None:
        return None
    return deadline - give_up_margin(deadline - started)


async def fan_out(
    jobs: Sequence[Awaitable[T]],
    *,
    give_up: float | None = None,
    late: Callable[[int], T] | None = None,
) -> AsyncGenerator[T, None]:
    """Run the jobs concurrently and yield each one's result as soon as it is known.

    At give_up (with late), the jobs still running are cancelled and late(i) stands for the
    result of jobs[i]; those that finished meanwhile still give their real result. Each job
    must turn its own failures into a result: one that raises ends the generator. No job
    outlives the generator, whether it ended, failed or was closed.
    """
    if give_up is not None and late is None:
        for job in jobs:  # never started: closed, so that none warns it was never awaited
            if asyncio.iscoroutine(job):
                job.close()
        raise ValueError("fan_out: give_up needs late, the result of a job that did not finish")
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Future[T]] = [asyncio.ensure_future(job) for job in jobs]
    # Each task puts itself here when done: one callback per task, where asyncio.wait() on
    # the pending set after every result costs O(N) per result, O(N^2) per request.
    finished: asyncio.Queue[asyncio.Future[T]] = asyncio.Queue()
    for each in tasks:
        each.add_done_callback(finished.put_nowait)
    pending = set(tasks)
    try:
        while pending:
            if not finished.empty():
                task = finished.get_nowait()
            elif give_up is None:
                task = await finished.get()
            else:
                timeout = give_up - loop.time()
                if timeout <= 0:
                    break
                try:
                    async with asyncio.timeout(timeout):
                        task = await finished.get()
                except TimeoutError:
                    break
            pending.discard(task)
            yield task.result()
        # Jobs that finished while we stopped waiting still give their real result.
        while not finished.empty():
            task = finished.get_nowait()
            if task in pending:
                pending.discard(task)
                yield task.result()
        if pending and late is not None:
            for task in pending:
                task.cancel()
            for index, task in enumerate(tasks):
                if task in pending:
                    yield late(index)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
