"""Receiving a call's one request message at the edge, rather than letting gRPC do it.

For a method whose request is one message, gRPC reads it whole, however slowly it comes, and
decodes it, before the handler runs. `read_by_edge` turns such a handler into one of a request
stream that receives the message itself, as bytes (`receive`, within RECEIVE_SECONDS), after
whatever must come first (authenticating the caller, taking a slot): server.api.edge and
server.api.identity_free say what that is. On the wire nothing changes: a caller sends its one
request message as before.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from server.api.wire import Refused
from server.wrapping import Behavior, rebuilt

if TYPE_CHECKING:  # generic in grpc-stubs only
    Handler = grpc.RpcMethodHandler[Any, Any]

Context = grpc.aio.ServicerContext[Any, Any]

#: How long a call's one request message may take to arrive, from when the call was admitted
#: (authenticated, for ExposureService): a caller that sends it slowly, or never, holds one of
#: --max-concurrent-rpcs for no longer. 4 MiB in 30 s is about 1 Mbit/s.
RECEIVE_SECONDS = 30.0  # not Final: tests shorten it


async def receive(context: Context, seconds: float | None = None) -> bytes:
    """The call's one request message, as bytes, if it arrives within `seconds` (None:
    RECEIVE_SECONDS)."""
    seconds = RECEIVE_SECONDS if seconds is None else seconds
    try:
        message = await asyncio.wait_for(context.read(), seconds)
    except TimeoutError:
        raise Refused(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"the request message did not arrive within {seconds:g} s",
        ) from None
    if message is grpc.aio.EOF:  # type: ignore[attr-defined]  # missing in grpc-stubs
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "the call ended without a request")
    data: bytes = message
    return data


def read_by_edge(handler: Handler, admit: Callable[[Context], Awaitable[Any]]) -> Handler:
    """handler, of a method with one request message, as a handler that reads that message
    itself: `admit(context)` authenticates, receives and checks it, before gRPC has read a byte
    of it (for a handler of a unary request, gRPC reads it whole, however slowly it comes,
    before the handler runs). On the wire nothing changes: the caller sends one message."""
    if handler.request_streaming:
        raise TypeError("read_by_edge: the method's request must be one message")

    def admitted(behavior: Behavior) -> Behavior:
        if inspect.isasyncgenfunction(behavior):

            async def generator(_: Any, context: Context) -> AsyncIterator[Any]:
                async for response in behavior(await admit(context), context):
                    yield response

            return generator

        # One response, or a stream of them written with context.write().
        async def coroutine(_: Any, context: Context) -> Any:
            return await behavior(await admit(context), context)

        return coroutine

    return rebuilt(handler, admitted, reads_request=True)
