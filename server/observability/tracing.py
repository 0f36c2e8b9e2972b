"""OpenTelemetry tracing: a span per request, per rule and per API server call.

The request's SERVER span comes from a grpc.aio interceptor of ours (it honours the caller's
traceparent and says what the OpenTelemetry gRPC instrumentation says); the API call spans
from the aiohttp-client instrumentation's trace config, given to server.kube's own session
when server.app makes it (api_call_trace_config); the exposer starts the rule spans itself.

Tracing is configured by the standard OTEL_* environment, read by the SDK and the OTLP
exporter themselves (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER,
OTEL_BSP_*, ...). When none of it asks for traces, no SDK provider exists, no interceptor or
trace config is installed, and the exposer's spans are the API's no-ops: tracing then costs
nothing.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Final, cast
from urllib.parse import unquote

import aiohttp
import grpc
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.aiohttp_client import create_trace_config
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from server.rules.brief import brief
from server.wrapping import Behavior, ServerInterceptor, WrappingInterceptor, rebuilt

if TYPE_CHECKING:
    from server.wrapping import Handler

    Context = grpc.aio.ServicerContext[Any, Any]

# Probes and tooling, not requests: a trace per kubelet health check would bury the real ones.
UNTRACED_SERVICES: Final = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection")
_UNTRACED_PREFIXES: Final = tuple(f"/{service}/" for service in UNTRACED_SERVICES)
EXPORTERS: Final = ("otlp", "console", "none")


class TracingConfigError(ValueError):
    """The OTEL_* environment asks for something k8sailor cannot do; str() says what."""


def _exporters(environ: Mapping[str, str]) -> list[str]:
    """Which span exporters the environment asks for; [] when tracing is off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if named:
        chosen = [name.strip() for name in named.split(",") if name.strip()]
        unknown = [name for name in chosen if name not in EXPORTERS]
        if unknown:
            raise TracingConfigError(
                f"OTEL_TRACES_EXPORTER: {', '.join(unknown)} is not one of {', '.join(EXPORTERS)}"
            )
        return [name for name in chosen if name != "none"]
    # The SDK's own default exporter is otlp, but tracing to a collector that nobody set up
    # would cost every request something for nothing: an endpoint is what switches it on.
    endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    return ["otlp"] if any(environ.get(name, "").strip() for name in endpoints) else []


def _otlp_exporter(environ: Mapping[str, str]) -> SpanExporter:
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = environ.get(name, "").strip()
        if protocol and protocol != "grpc":
            raise TracingConfigError(
                f"{name}: {protocol!r} is not supported; k8sailor exports OTLP over gRPC "
                f"(set it to grpc, or leave it unset)"
            )
    # Imported here: the exporter's module loads its protobuf and gRPC stubs at import time,
    # which a server without tracing has no need to pay for.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter,
    )

    return OTLPSpanExporter()


def resource() -> Resource:
    """The SDK's resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES), named k8sailor unless
    the environment names it."""
    detected = Resource.create()
    if str(detected.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        detected = detected.merge(Resource({SERVICE_NAME: "k8sailor"}))
    return detected


def provider_from_env(environ: Mapping[str, str]) -> TracerProvider | None:
    """An SDK tracer provider as the OTEL_* environment asks, or None when tracing is off.

    Raises TracingConfigError for settings k8sailor cannot honour.
    """
    chosen = _exporters(environ)
    if not chosen:
        return None
    provider = TracerProvider(resource=resource())
    for name in chosen:
        exporter = _otlp_exporter(environ) if name == "otlp" else ConsoleSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


# What the SERVER span of a call says, in the names the OpenTelemetry gRPC instrumentation gives
# them (semantic conventions 1.11: net.peer.*), so that what reads its spans reads ours.
_SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.11.0"
# The codes that make a SERVER span an error, as the conventions for gRPC say: the server's own
# failures. NOT_FOUND or INVALID_ARGUMENT is an answer to the caller, not a fault of ours.
_SERVER_ERRORS: Final = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
_LOOPBACK: Final = ("127.0.0.1", "[::1]")
# Ways a call stops without its handler returning or raising: the caller went away or its
# deadline passed (gRPC cancels the handler's task), or its response stream was closed.
_STOPPED: Final = (asyncio.CancelledError, GeneratorExit)


class _ServerInterceptor(WrappingInterceptor):
    """A SERVER span around every call of a traced method, a child of the caller's traceparent
    when it sends one, ended with the status the call ended with (abort, a code set, an
    uncaught exception, cancellation or the deadline).

    A wrapper keeps the form of the behaviour it wraps: grpc.aio runs a streaming handler by
    that form, an async generator or a coroutine that writes with context.write()
    (CreateServices and Health.Watch are the latter).
    """

    def __init__(self, tracer: trace.Tracer) -> None:
        super().__init__()
        self._tracer = tracer

    def wrap(self, method: str, handler: Handler) -> Handler:
        if method.startswith(_UNTRACED_PREFIXES):
            return handler
        service, _, name = method.lstrip("/").partition("/")
        spans = _Spans(
            self._tracer, method, {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
        )
        return rebuilt(handler, spans.around)


@dataclass(frozen=True)
class _Spans:
    """The spans of one method: its name and the attributes every call of it has."""

    tracer: trace.Tracer
    method: str  # "/k8sailor.v1.ExposureService/CreateServices", the span's name
    attributes: Mapping[str, str]

    def around(self, behavior: Behavior) -> Behavior:
        """behavior, each call of it in a span; of the same form."""
        if inspect.isasyncgenfunction(behavior):

            async def generator(request: Any, context: Context) -> AsyncIterator[Any]:
                with self._span(context):
                    async for response in behavior(request, context):
                        yield response

            return generator

        async def coroutine(request: Any, context: Context) -> Any:
            with self._span(context):
                return await behavior(request, context)

        return coroutine

    @contextmanager
    def _span(self, context: Context) -> Iterator[None]:
        metadata: dict[str, Any] = dict(context.invocation_metadata() or ())
        attributes: dict[str, str] = {**self.attributes, **_peer(context.peer())}
        if "user-agent" in metadata:
            # Shown in brief: it is the caller's (up to gRPC's 8 KiB of metadata), unauthenticated.
            attributes["rpc.user_agent"] = brief(str(metadata["user-agent"]))
        with self.tracer.start_as_current_span(
            self.method,
            # The caller's parent span, by the configured propagators (OTEL_PROPAGATORS: W3C by
            # default, B3 where a mesh speaks it). Only the parent is taken: the context made
            # current is built from ours, so a caller's baggage never reaches the handler or
            # the API server's requests (tests/unit/test_server_spans.py holds that).
            context=propagate.extract(metadata),
            kind=SpanKind.SERVER,
            attributes=attributes,
            # Both are ours to decide (_end): an abort is a status, not an exception.
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            except BaseException as error:
                _end(span, context, error)
                raise
            _end(span, context, None)


def _end(span: trace.Span, context: Context, error: BaseException | None) -> None:
    """Say on span how the call ended: its status code, an error status for the server's own
    failures, and the exception a handler failed with."""
    code = _final_code(context, error)
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    # An abort is a status, not a failure; a stopped call is the caller's doing.
    failed = None if isinstance(error, (grpc.aio.AbortError, *_STOPPED)) else error
    if code in _SERVER_ERRORS:
        uncaught = f"{type(failed).__name__}: {failed}" if failed is not None else ""
        details = context.details() or uncaught or code.value[1]
        span.set_status(Status(StatusCode.ERROR, f"{code}:{details}"))
    if failed is not None:
        span.record_exception(failed)


def _final_code(context: Context, error: BaseException | None) -> grpc.StatusCode:
    """The status the caller gets."""
    if isinstance(error, _STOPPED):
        # Cancelled both when the caller goes away and when its deadline passes; the caller
        # sees DEADLINE_EXCEEDED in the second case.
        remaining = context.time_remaining()
        expired = remaining is not None and remaining <= 0
        return grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
    code = context.code()  # what abort() or set_code() set
    if isinstance(code, grpc.StatusCode):
        return code
    # Nothing set: a handler that returned is OK, one that raised is UNKNOWN to the caller.
    return grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN


def _peer(peer: str) -> dict[str, str]:
    """net.peer.ip and net.peer.port of a TCP caller, from gRPC's "ipv4:10.1.2.3:51234" or
    "ipv6:%5B::1%5D:51234" (the first address, when it names several); net.peer.name for one
    on loopback. Nothing for a Unix socket's caller."""
    scheme, _, address = peer.partition(",")[0].partition(":")
    ip, _, port = address.rpartition(":")
    if scheme not in ("ipv4", "ipv6") or not ip:
        return {}
    ip = unquote(ip)
    found = {"net.peer.ip": ip, "net.peer.port": port}
    if ip in _LOOPBACK:
        found["net.peer.name"] = "localhost"
    return found


def server_interceptor(provider: TracerProvider) -> ServerInterceptor:
    """A SERVER span per RPC, a child of the caller's traceparent when it sends one; none for
    UNTRACED_SERVICES."""
    return _ServerInterceptor(provider.get_tracer("k8sailor.grpc", schema_url=_SCHEMA_URL))


# The signals of a TraceConfig, by the name of the property that holds each (aiohttp's public
# API); those with callbacks in the instrumentation's trace config are copied, guarded.
_SIGNALS: Final = (
    "on_request_start",
    "on_request_chunk_sent",
    "on_response_chunk_received",
    "on_request_end",
    "on_request_exception",
    "on_request_redirect",
    "on_connection_queued_start",
    "on_connection_queued_end",
    "on_connection_create_start",
    "on_connection_create_end",
    "on_connection_reuseconn",
    "on_dns_resolvehost_start",
    "on_dns_resolvehost_end",
    "on_dns_cache_hit",
    "on_dns_cache_miss",
    "on_request_headers_sent",
)


class _Traced(SimpleNamespace):
    """One request's trace context: whether it is traced (decided once, as it starts), and
    the instrumentation's own context for it when it is."""

    recording: bool
    inner: SimpleNamespace | None


Callback = Callable[[aiohttp.ClientSession, SimpleNamespace, Any], Awaitable[None]]


def _while_recording(callback: Callback) -> Callback:
    async def guarded(
        session: aiohttp.ClientSession, context: SimpleNamespace, params: Any
    ) -> None:
        if context.recording:
            await callback(session, context.inner, params)

    return guarded


def api_call_trace_config(provider: TracerProvider) -> aiohttp.TraceConfig:
    """A trace config for server.kube's session: a CLIENT span per API server call made
    while a sampled span is current (a request's rule, or the request).

    The aiohttp-client instrumentation's own trace config starts a span and injects
    traceparent for every request, even when nothing will be recorded: the span is then a
    non-recording one, or, with no span current (the Deployment cache's list and watch), the
    root of a trace of its own. Its callbacks here act only for a request that starts while
    the current span is recording: a call of a request that is not traced makes no span and
    carries no traceparent (the API server decides for itself, as for any untraced client).
    """
    inner = create_trace_config(tracer_provider=provider)

    def context(trace_request_ctx: Any = None) -> SimpleNamespace:
        if not trace.get_current_span().is_recording():
            return _Traced(recording=False, inner=None)
        return _Traced(recording=True, inner=inner.trace_config_ctx(trace_request_ctx))

    config = aiohttp.TraceConfig(trace_config_ctx_factory=cast(type[SimpleNamespace], context))
    for name in _SIGNALS:
        theirs = getattr(inner, name)
        ours = getattr(config, name)
        for callback in theirs:
            ours.append(_while_recording(callback))
    config.freeze()
    return config
