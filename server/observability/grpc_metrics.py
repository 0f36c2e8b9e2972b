"""A grpc.aio server interceptor that counts RPCs the way go-grpc-prometheus does.

Same metric names, labels and label values (grpc_type "unary"/"server_stream"/...,
grpc_code in Go's spelling, "OK", "InvalidArgument", ...), so the stock gRPC dashboards and
alerts work on k8sailor unchanged.

grpc.aio lets a streaming handler answer in two ways: as an async generator, or as a coroutine
that calls context.write() (CreateServices and the health service's Watch do the latter). The
wrapper keeps the form of the handler it wraps, because grpc.aio picks how to run a handler by
that form, and counts messages sent in both.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import grpc
from google.protobuf import descriptor_pool

from server.observability.metrics import (
    GRPC_HANDLED,
    GRPC_HANDLING_SECONDS,
    GRPC_MSG_RECEIVED,
    GRPC_MSG_SENT,
    GRPC_STARTED,
)
from server.wrapping import Behavior, WrappingInterceptor, rebuilt

# grpc_code values as Go's codes.Code.String() spells them: what dashboards filter on.
GO_CODE_NAMES: Final[dict[grpc.StatusCode, str]] = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}

Context = grpc.aio.ServicerContext[Any, Any]

if TYPE_CHECKING:  # generic in grpc-stubs only
    Handler = grpc.RpcMethodHandler[Any, Any]


def grpc_type(handler: Handler, method: str = "") -> str:
    """The RPC's type as its proto declares it, when the method is known to protobuf: a handler
    may read a unary request as a stream (server.api.edge does, to authenticate first); else as
    the handler reads and writes."""
    requests, responses = handler.request_streaming, handler.response_streaming
    try:
        declared = descriptor_pool.Default().FindMethodByName(method.lstrip("/").replace("/", "."))
        requests, responses = declared.client_streaming, declared.server_streaming
    except KeyError:
        pass
    if requests and responses:
        return "bidi_stream"
    if requests:
        return "client_stream"
    if responses:
        return "server_stream"
    return "unary"


@dataclass(frozen=True, slots=True)
class _MethodMetrics:
    """The metrics of one method, under its labels (grpc_type, grpc_service, grpc_method)."""

    labels: tuple[str, str, str]

    def started(self) -> None:
        GRPC_STARTED.labels(*self.labels).inc()

    def received(self) -> None:
        GRPC_MSG_RECEIVED.labels(*self.labels).inc()

    def sent(self) -> None:
        GRPC_MSG_SENT.labels(*self.labels).inc()

    def handled(self, code: str, seconds: float) -> None:
        GRPC_HANDLED.labels(*self.labels, code).inc()
        GRPC_HANDLING_SECONDS.labels(*self.labels).observe(seconds)


class _Context:
    """The servicer context, with writes and reads counted; everything else passes through."""

    __slots__ = ("_context", "_metrics")

    def __init__(self, context: Context, metrics: _MethodMetrics):
        self._context = context
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def write(self, message: Any) -> None:
        await self._context.write(message)
        self._metrics.sent()

    async def read(self) -> Any:
        message = await self._context.read()
        if message is not grpc.aio.EOF:  # type: ignore[attr-defined]  # missing in grpc-stubs
            self._metrics.received()
        return message


def _code(context: Context, error: BaseException | None) -> str:
    """The status the RPC ended with, in Go's spelling."""
    if isinstance(error, asyncio.CancelledError):
        # gRPC cancels the handler both when the caller goes away and when its deadline
        # passes; the caller sees DEADLINE_EXCEEDED in the second case, and so do we.
        remaining = context.time_remaining()
        expired = remaining is not None and remaining <= 0
        return "DeadlineExceeded" if expired else "Canceled"
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return GO_CODE_NAMES[code]
    # Nothing set: a handler that returned is OK, one that raised is UNKNOWN to the caller.
    return "OK" if error is None else "Unknown"


class PrometheusServerInterceptor(WrappingInterceptor):
    """grpc_server_started/handled/msg_received/msg_sent_total, grpc_server_handling_seconds."""

    def wrap(self, method: str, handler: Handler) -> Handler:
        return _counting(method, handler)


def _counting(method: str, handler: Handler) -> Handler:
    """handler, with its calls and messages counted under method's labels."""
    service, _, name = method.lstrip("/").rpartition("/")
    metrics = _MethodMetrics((grpc_type(handler, method), service, name))
    if handler.request_streaming or handler.response_streaming:
        counting = partial(
            _wrap,
            metrics=metrics,
            request_streaming=handler.request_streaming,
            one_response=not handler.response_streaming,
        )
    else:
        counting = partial(_wrap_unary, metrics=metrics)
    return rebuilt(handler, counting)


def _wrap_unary(behavior: Behavior, metrics: _MethodMetrics) -> Behavior:
    """A wrapper of a handler of one request and one response."""

    async def unary(request: Any, context: Context) -> Any:
        metrics.started()
        metrics.received()
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            response = await behavior(request, context)
            metrics.sent()
            return response
        except BaseException as raised:
            error = raised
            raise
        finally:
            metrics.handled(_code(context, error), time.perf_counter() - started)

    return unary


async def _counted(requests: AsyncIterator[Any], metrics: _MethodMetrics) -> AsyncIterator[Any]:
    async for request in requests:
        metrics.received()
        yield request


def _wrap(
    behavior: Behavior,
    metrics: _MethodMetrics,
    *,
    request_streaming: bool,
    one_response: bool,
) -> Behavior:
    """A wrapper of a streaming handler, of the same form (coroutine or async generator)."""

    def begin(request: Any, context: Context) -> tuple[Any, _Context]:
        metrics.started()
        if request_streaming:
            request = _counted(request, metrics)
        else:
            metrics.received()
        return request, _Context(context, metrics)

    def end(context: Context, error: BaseException | None, t0: float) -> None:
        metrics.handled(_code(context, error), time.perf_counter() - t0)

    if inspect.isasyncgenfunction(behavior):

        async def generator(request: Any, context: Context) -> Any:
            request, counting = begin(request, context)
            started = time.perf_counter()
            error: BaseException | None = None
            try:
                async for response in behavior(request, counting):
                    metrics.sent()
                    yield response
            except BaseException as raised:
                error = raised
                raise
            finally:
                end(context, error, started)

        return generator

    async def coroutine(request: Any, context: Context) -> Any:
        request, counting = begin(request, context)
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            response = await behavior(request, counting)
            if one_response:  # a unary response is returned, not written
                metrics.sent()
            return response
        except BaseException as raised:
            error = raised
            raise
        finally:
            end(context, error, started)

    return coroutine
