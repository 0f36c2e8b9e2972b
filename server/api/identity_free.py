"""The calls that need no identity (health Check and Watch): what anyone may cost the server.

Anyone can open them, so that they can never take the call slots authenticated callers need:
at most MAX_IDENTITY_FREE_CALLS of them at once per port, far below --max-concurrent-rpcs;
their request must arrive within IDENTITY_FREE_RECEIVE_SECONDS; and health Watch streams are
capped lower still (probes use Check). `bounded` applies these on the main port (through
server.api.edge.Edge) and `HealthEdge` on the plaintext health port (server.api.health), each
port with caps of its own.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Final

import grpc
from google.protobuf.message import DecodeError

from server.api.reading import Context, read_by_edge, receive
from server.api.wire import Refused, malformed
from server.wrapping import Behavior, WrappingInterceptor, rebuilt

if TYPE_CHECKING:  # generic in grpc-stubs only
    from server.api.reading import Handler

HEALTH_WATCH: Final = "/grpc.health.v1.Health/Watch"

#: How long the request of a call that needs no identity may take to arrive: a
#: HealthCheckRequest is a service name, a few bytes, so a caller who has not sent it within a
#: second is holding a slot, not probing.
IDENTITY_FREE_RECEIVE_SECONDS = 1.0  # not Final: tests lengthen it
#: Concurrent health Watch streams per server: probes use Check, Watch is for the few clients
#: that follow the status; each stream is held open for as long as its caller likes.
MAX_HEALTH_WATCHES: Final = 32
#: Concurrent calls that need no identity (health Check and Watch, from when they arrive,
#: request unread, to their end) per port: the Watch streams and 16 Checks at once besides.
#: Anyone can open these, so they must stay well below --max-concurrent-rpcs (256: 208 slots
#: are then always left for callers who authenticate); beyond it, RESOURCE_EXHAUSTED at once.
MAX_IDENTITY_FREE_CALLS: Final = MAX_HEALTH_WATCHES + 16


class Cap:
    """How many calls of a kind one server (port) has open at once, and its cap."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open = 0

    def admit(self) -> bool:
        if self._open >= self.limit:
            return False
        self._open += 1
        return True

    def release(self) -> None:
        self._open -= 1


class HealthEdge(WrappingInterceptor):
    """For the plaintext health port (server.api.health): the bounds of `bounded`, its own caps."""

    def __init__(self) -> None:
        super().__init__()
        self._watch_cap = Cap(MAX_HEALTH_WATCHES)
        self._identity_free = Cap(MAX_IDENTITY_FREE_CALLS)

    def wrap(self, method: str, handler: Handler) -> Handler:
        return bounded(method, handler, self._watch_cap, self._identity_free)


def bounded(method: str, handler: Handler, watch_cap: Cap, calls: Cap) -> Handler:
    """A method that needs no identity (health, anything but ExposureService and reflection):
    at most calls.limit such calls at once, its one request message must arrive within
    IDENTITY_FREE_RECEIVE_SECONDS, and health Watch streams are capped. A stream of requests
    (reflection) is left as it is."""
    if handler.request_streaming:
        return handler
    if method == HEALTH_WATCH:
        handler = watch_capped(handler, watch_cap)
    deserialize = handler.request_deserializer

    async def admit(context: Context) -> Any:
        try:
            raw = await receive(context, IDENTITY_FREE_RECEIVE_SECONDS)
            return raw if deserialize is None else deserialize(raw)
        except DecodeError:
            refused = malformed()
        except Refused as error:
            refused = error
        await context.abort(refused.code, refused.message)
        raise AssertionError("unreachable: abort raises")

    return identity_free(read_by_edge(handler, admit), calls)


def identity_free(handler: Handler, cap: Cap) -> Handler:
    """handler (of a request stream, as read_by_edge makes it), refusing RESOURCE_EXHAUSTED at
    once beyond cap.limit calls at once: its slot is taken before its request is read, and held
    until the call ends, so that callers who prove nothing hold at most cap.limit of the
    server's --max-concurrent-rpcs, however they send (or never send) their requests."""

    async def enter(context: Context) -> None:
        if not cap.admit():
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this server serves at most {cap.limit} calls that need no identity (health "
                "checks) at once on this port; try again shortly",
            )

    def slotted(behavior: Behavior) -> Behavior:
        if inspect.isasyncgenfunction(behavior):

            async def generator(requests: Any, context: Context) -> AsyncIterator[Any]:
                await enter(context)
                try:
                    async for response in behavior(requests, context):
                        yield response
                finally:
                    cap.release()

            return generator

        # One response, or a stream of them written with context.write().
        async def coroutine(requests: Any, context: Context) -> Any:
            await enter(context)
            try:
                return await behavior(requests, context)
            finally:
                cap.release()

        return coroutine

    return rebuilt(handler, slotted)


def watch_capped(handler: Handler, cap: Cap) -> Handler:
    """The health Watch handler, refusing RESOURCE_EXHAUSTED beyond cap.limit streams at once
    (grpc_health's Watch writes through context.write: a coroutine)."""
    if handler.unary_stream is None:
        return handler

    def capped(watch: Behavior) -> Behavior:
        async def watching(request: Any, context: Context) -> Any:
            if not cap.admit():
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"this server serves at most {cap.limit} health Watch streams at once; use "
                    "Check (as probes do), or watch again later",
                )
            try:
                return await watch(request, context)
            finally:
                cap.release()

        return watching

    return rebuilt(handler, capped)
