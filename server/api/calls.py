"""Running one RPC: its work, then one log line and, for a request-level failure, one abort with
the mapped status, whatever happened; and the two times the domain flows are given."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from server.api.requestlog import Call, Details, log_request
from server.api.status import CANCELLED, EXPECTED, OK, Status, internal_error, status_for

log = logging.getLogger("k8sailor.requests")

Result = TypeVar("Result")
Message = TypeVar("Message")


async def run(
    call: Call,
    context: grpc.aio.ServicerContext[Any, Any],
    work: Callable[[], Awaitable[Result]],
    details: Callable[[Status], Details],
    *,
    finish: Callable[[], None] | None = None,
) -> Result:
    """work's answer; a request-level failure aborts the call with its status instead.

    Whatever happened, the call's log line is written once, with the RPC's own fields (what
    details says for the status the call ended with), and then finish runs (counting the
    rules' results): when the caller goes away (CANCELLED) too.
    """
    status = OK
    try:
        return await work()
    except EXPECTED as error:
        status = status_for(error)
    except asyncio.CancelledError:
        status = CANCELLED
        raise
    except Exception as error:  # a bug of ours: logged in full, reported in one sentence
        log.exception("%s failed unexpectedly", call.event)
        status = internal_error(error)
    finally:
        log_request(call, status, context.peer(), details(status))
        if finish is not None:
            finish()
    # abort raises (AbortError), which grpc.aio turns into the status: nothing is returned.
    return await context.abort(status.code, status.message)


async def write_each(
    context: grpc.aio.ServicerContext[Any, Message],
    results: AsyncGenerator[Result, None],
    to_proto: Callable[[Result], Message],
    seen: list[Result],
) -> None:
    """Write each result as it comes, and keep it in seen (for the log line and the counts).

    The handlers write through context.write() rather than being async generators, so that
    leaving the `async with` closes the domain's generator - and cancels what it still runs -
    at once when the caller goes away; the generated stubs only model the generator form.
    """
    async with contextlib.aclosing(results) as each:
        async for result in each:
            seen.append(result)
            await context.write(to_proto(result))


def caller_deadline(context: grpc.aio.ServicerContext[Any, Any]) -> float | None:
    """When the caller's deadline passes, in loop.time() terms; None: it set none."""
    seconds_left = context.time_remaining()
    if seconds_left is None:
        return None
    return asyncio.get_running_loop().time() + seconds_left
