"""The SERVER span of each call (server.observability.tracing.server_interceptor), on a real
grpc.aio server on port 0 through a real channel: every handler kind and form, the caller's
traceparent, and the status a call ends with (returned, aborted, raised, cancelled, expired)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from opentelemetry import baggage
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from server.observability.tracing import server_interceptor

SERVICE = "test.Spans"
TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN_ID = 0x00F067AA0BA902B7
TRACEPARENT = (("traceparent", f"00-{TRACE_ID:032x}-{SPAN_ID:016x}-01"),)
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
Context = grpc.aio.ServicerContext[bytes, bytes]


async def unary(request: bytes, context: Context) -> bytes:
    """Answers as the request says: abort with a code, raise, or wait for the deadline."""
    if request.startswith(b"abort:"):
        await context.abort(grpc.StatusCode[request[6:].decode()], "told to")
    if request == b"set-code":
        context.set_code(grpc.StatusCode.UNAVAILABLE)
        context.set_details("said so")
        return b""
    if request == b"raise":
        raise ValueError("broken")
    if request == b"wait":
        await asyncio.sleep(30)
    return request


async def generated(request: bytes, context: Context) -> AsyncIterator[bytes]:
    yield request
    if request == b"abort:NOT_FOUND":
        await context.abort(grpc.StatusCode.NOT_FOUND, "gone")
    if request == b"wait":
        await asyncio.sleep(30)
    yield request


async def written(request: bytes, context: Context) -> None:
    """A stream answered with context.write(), as CreateServices is."""
    await context.write(request)
    if request == b"raise":
        raise RuntimeError("broken mid-stream")
    await context.write(request)


async def joined(requests: AsyncIterator[bytes], context: Context) -> bytes:
    return b"".join([request async for request in requests])


async def echoed(requests: AsyncIterator[bytes], context: Context) -> AsyncIterator[bytes]:
    async for request in requests:
        yield request


unary_handler = grpc.unary_unary_rpc_method_handler(unary)
HANDLERS = {
    "Unary": unary_handler,
    "Generated": grpc.unary_stream_rpc_method_handler(generated),
    "Written": grpc.unary_stream_rpc_method_handler(written),
    "Joined": grpc.stream_unary_rpc_method_handler(joined),
    "Echoed": grpc.stream_stream_rpc_method_handler(echoed),
}


@pytest.fixture
async def served() -> AsyncIterator[tuple[grpc.aio.Channel, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    server = grpc.aio.server(interceptors=[server_interceptor(provider)])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(SERVICE, HANDLERS),
            grpc.method_handlers_generic_handler("grpc.health.v1.Health", {"Check": unary_handler}),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel, exporter
    finally:
        await server.stop(None)


async def call(channel: grpc.aio.Channel, method: str, *requests: bytes, **options: Any) -> Any:
    """The call's answer: a response, the responses of a stream, or the status it failed with."""
    path = f"/{SERVICE}/{method}"
    try:
        if method == "Unary":
            return await channel.unary_unary(path, None, None)(requests[0], **options)
        if method == "Joined":
            return await channel.stream_unary(path, None, None)(iter(requests), **options)
        if method == "Echoed":
            return [
                r async for r in channel.stream_stream(path, None, None)(iter(requests), **options)
            ]
        return [r async for r in channel.unary_stream(path, None, None)(requests[0], **options)]
    except grpc.aio.AioRpcError as error:
        return error.code()


async def finished(exporter: InMemorySpanExporter, count: int = 1) -> list[ReadableSpan]:
    """The spans ended so far, once there are count of them: a call's span ends as its
    handler does, which may be after the caller saw its status."""
    for _ in range(200):
        spans = list(exporter.get_finished_spans())
        if len(spans) >= count:
            return spans
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(spans)} spans ended, not {count}")


def ended(span: ReadableSpan) -> tuple[int, StatusCode]:
    assert span.attributes is not None
    return int(span.attributes["rpc.grpc.status_code"]), span.status.status_code  # type: ignore[arg-type]


KINDS: list[tuple[str, tuple[bytes, ...], object]] = [
    ("Unary", (b"hi",), b"hi"),
    ("Generated", (b"hi",), [b"hi", b"hi"]),
    ("Written", (b"hi",), [b"hi", b"hi"]),
    ("Joined", (b"h", b"i"), b"hi"),
    ("Echoed", (b"h", b"i"), [b"h", b"i"]),
]


@pytest.mark.parametrize(("method", "requests", "answer"), KINDS)
async def test_every_kind_of_call_makes_one_server_span_under_the_callers_traceparent(
    served: tuple[grpc.aio.Channel, InMemorySpanExporter],
    method: str,
    requests: tuple[bytes, ...],
    answer: object,
) -> None:
    channel, exporter = served
    assert await call(channel, method, *requests, metadata=TRACEPARENT) == answer
    [span] = await finished(exporter)
    assert span.name == f"/{SERVICE}/{method}"
    assert span.kind is SpanKind.SERVER
    assert span.context is not None
    assert span.context.trace_id == TRACE_ID
    assert span.parent is not None
    assert span.parent.span_id == SPAN_ID
    assert span.parent.is_remote
    attributes = dict(span.attributes or {})
    assert str(attributes.pop("rpc.user_agent")).startswith("grpc-python-asyncio/")
    assert str(attributes.pop("net.peer.port")).isdigit()
    assert attributes == {
        "rpc.system": "grpc",
        "rpc.service": SERVICE,
        "rpc.method": method,
        "rpc.grpc.status_code": 0,
        "net.peer.ip": "127.0.0.1",
        "net.peer.name": "localhost",
    }
    assert span.status.status_code is StatusCode.UNSET
    assert span.events == ()


async def test_without_traceparent_a_call_is_the_root_of_its_own_trace(
    served: tuple[grpc.aio.Channel, InMemorySpanExporter],
) -> None:
    channel, exporter = served
    assert await call(channel, "Unary", b"hi") == b"hi"
    [span] = await finished(exporter)
    assert span.parent is None


@pytest.mark.parametrize(
    ("method", "request_", "code", "error"),
    [
        # An answer to the caller: its code on the span, which is no error of the server's.
        ("Unary", b"abort:NOT_FOUND", grpc.StatusCode.NOT_FOUND, False),
        ("Unary", b"abort:INVALID_ARGUMENT", grpc.StatusCode.INVALID_ARGUMENT, False),
        ("Generated", b"abort:NOT_FOUND", grpc.StatusCode.NOT_FOUND, False),
        # The server's own failures, as the conventions for gRPC list them.
        ("Unary", b"abort:INTERNAL", grpc.StatusCode.INTERNAL, True),
        ("Unary", b"set-code", grpc.StatusCode.UNAVAILABLE, True),
    ],
)
async def test_an_aborted_call_ends_its_span_with_its_code(
    served: tuple[grpc.aio.Channel, InMemorySpanExporter],
    method: str,
    request_: bytes,
    code: grpc.StatusCode,
    error: bool,
) -> None:
    channel, exporter = served
    answer = await call(channel, method, request_)
    assert (answer[-1] if isinstance(answer, list) else answer) is code
    [span] = await finished(exporter)
    assert ended(span) == (code.value[0], StatusCode.ERROR if error else StatusCode.UNSET)
    if error:
        assert span.status.description in (f"{code}:told to", f"{code}:said so")
    # An abort is a status, not an exception of the handler's.
    assert span.events == ()


@pytest.mark.parametrize(
    ("method", "raised"),
    [("Unary", "ValueError: broken"), ("Written", "RuntimeError: broken mid-stream")],
)
async def test_an_uncaught_exception_is_unknown_to_the_caller_and_an_error_on_the_span(
    served: tuple[grpc.aio.Channel, InMemorySpanExporter], method: str, raised: str
) -> None:
    channel, exporter = served
    answer = await call(channel, method, b"raise")
    assert (answer[-1] if isinstance(answer, list) else answer) is grpc.StatusCode.UNKNOWN
    [span] = await finished(exporter)
    assert ended(span) == (grpc.StatusCode.UNKNOWN.value[0], StatusCode.ERROR)
    assert span.status.description == f"StatusCode.UNKNOWN:{raised}"
    assert [event.name for event in span.events] == ["exception"]


@pytest.mark.parametrize("method", ["Unary", "Generated"])
async def test_a_call_past_its_deadline_ends_its_span_as_deadline_exceeded(
    served: tuple[grpc.aio.Channel, InMemorySpanExporter], method: str
) -> None:
    channel, exporter = served
    assert await call(channel, method, b"wait", timeout=0.2) is grpc.StatusCode.DEADLINE_EXCEEDED
    [span] = await finished(exporter)
    assert ended(span) == (grpc.StatusCode.DEADLINE_EXCEEDED.value[0], StatusCode.ERROR)
    assert span.events == ()


async def test_a_call_the_caller_cancels_ends_its_span_as_cancelled(
    served: tuple[grpc.aio.Channel, InMemorySpanExporter],
) -> None:
    channel, exporter = served
    waiting = channel.unary_unary(f"/{SERVICE}/Unary", None, None)(b"wait")
    await asyncio.sleep(0.2)  # the handler is waiting
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    [span] = await finished(exporter)
    # The caller's choice, not a failure of the server's.
    assert ended(span) == (grpc.StatusCode.CANCELLED.value[0], StatusCode.UNSET)


async def test_health_checks_make_no_span(
    served: tuple[grpc.aio.Channel, InMemorySpanExporter],
) -> None:
    channel, exporter = served
    assert await channel.unary_unary(HEALTH_CHECK, None, None)(b"hi") == b"hi"
    assert await call(channel, "Unary", b"after") == b"after"
    [span] = await finished(exporter)
    assert span.name == f"/{SERVICE}/Unary"


async def baggage_seen(request: bytes, context: Context) -> bytes:
    """The W3C baggage the handler runs under, as "k=v" lines."""
    return "\n".join(f"{k}={v}" for k, v in sorted(baggage.get_all().items())).encode()


@asynccontextmanager
async def serving(*options: tuple[str, Any]) -> AsyncIterator[tuple[Any, InMemorySpanExporter]]:
    """A traced server with the Unary and Baggage methods, and a unary call to one of them
    through a channel made with options."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    server = grpc.aio.server(interceptors=[server_interceptor(provider)])
    handlers = {
        "Unary": unary_handler,
        "Baggage": grpc.unary_unary_rpc_method_handler(baggage_seen),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:

            async def unary_call(method: str, request: bytes, **kwargs: Any) -> Any:
                return await channel.unary_unary(f"/{SERVICE}/{method}", None, None)(
                    request, **kwargs
                )

            yield unary_call, exporter
    finally:
        await server.stop(None)


async def test_a_long_user_agent_is_shown_in_brief_on_the_span() -> None:
    agent = "a" * 4000
    async with serving(("grpc.primary_user_agent", agent)) as (unary_call, exporter):
        assert await unary_call("Unary", b"hi") == b"hi"
        [span] = await finished(exporter)
    # The caller's agent is ours then grpc's own ("aaa… grpc-python-asyncio/1.x ..."): the
    # span keeps its start and how long it was, as log lines show long strings.
    shown = str((span.attributes or {})["rpc.user_agent"])
    assert re.fullmatch(r"a{64}…\(\d{4} characters\)", shown)


async def test_the_callers_baggage_is_not_taken_only_its_parent_span() -> None:
    # Baggage in the handler's context would go on to the API server with each API call's
    # traceparent (the aiohttp-client spans inject the current context).
    metadata = (*TRACEPARENT, ("baggage", "tenant=other,secret=1"))
    async with serving() as (unary_call, exporter):
        assert await unary_call("Baggage", b"", metadata=metadata) == b""
        [span] = await finished(exporter)
    assert span.context is not None
    assert span.context.trace_id == TRACE_ID
    assert span.parent is not None
    assert span.parent.span_id == SPAN_ID
