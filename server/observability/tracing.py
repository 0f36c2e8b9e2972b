"""OpenTelemetry tracing: a span per request, per rule and per API server call.

The spans come from the instrumentations made for these libraries: the gRPC one's grpc.aio
server interceptor (it honours the caller's traceparent) and the aiohttp-client one's trace
config, given to server.kube's own session when server.app makes it (api_call_trace_config);
the exposer starts the rule spans itself.

Tracing is configured by the standard OTEL_* environment, read by the SDK and the OTLP
exporter themselves (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER,
OTEL_BSP_*, ...). When none of it asks for traces, no SDK provider exists, no interceptor or
trace config is installed, and the exposer's spans are the API's no-ops: tracing then costs
nothing.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Final, cast

import aiohttp
import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.aiohttp_client import create_trace_config
from opentelemetry.instrumentation.grpc._aio_server import OpenTelemetryAioServerInterceptor
from opentelemetry.instrumentation.grpc.version import __version__ as grpc_instrumentation_version
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from server.wrapping import ServerInterceptor

if TYPE_CHECKING:
    from server.observability.grpc_metrics import Handler

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


class _ServerInterceptor(OpenTelemetryAioServerInterceptor):
    """The instrumentation's grpc.aio interceptor, for handlers that stream with
    context.write() too.

    Its streaming wrapper iterates the handler with `async for`, which fails on a handler that
    is a coroutine writing through context.write() - CreateServices and Health.Watch are such
    handlers (open-telemetry/opentelemetry-python-contrib#3066). Such a handler is awaited
    exactly as a unary one is, so it gets the unary wrapper: same span, same status handling.
    """

    def __init__(self, tracer: trace.Tracer) -> None:
        super().__init__(tracer, filter_=_traced)  # type: ignore[no-untyped-call]
        # Each method's handler as the instrumentation wraps it, made once. It wraps the
        # handler anew for every call (a handler tuple and three closures), and what it makes
        # reads nothing of the call's details but the method's name. Bounded: only methods
        # the server has a handler for get here.
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(  # type: ignore[override]  # the aio form, not grpc's
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None or not _traced(handler_call_details):
            return handler
        method: str = handler_call_details.method
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler and is_instrumentation_enabled():
            return known[1]

        async def same(_: grpc.HandlerCallDetails) -> Handler:
            return handler

        wrapped: Handler = await super().intercept_service(same, handler_call_details)  # type: ignore[no-untyped-call]
        if wrapped is not handler:  # not suppressed (is_instrumentation_enabled)
            self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _intercept_aio_server_stream(self, behavior: Any, handler_call_details: Any) -> Any:
        if inspect.iscoroutinefunction(behavior):
            return self._intercept_aio_server_unary(behavior, handler_call_details)  # type: ignore[no-untyped-call]
        return super()._intercept_aio_server_stream(behavior, handler_call_details)  # type: ignore[no-untyped-call]


def server_interceptor(provider: TracerProvider) -> ServerInterceptor:
    """A SERVER span per RPC, a child of the caller's traceparent when it sends one."""
    # The tracer the instrumentation's own aio_server_interceptor() would make.
    tracer = trace.get_tracer(
        "opentelemetry.instrumentation.grpc",
        grpc_instrumentation_version,
        provider,
        schema_url="https://opentelemetry.io/schemas/1.11.0",
    )
    return _ServerInterceptor(tracer)


def _traced(details: grpc.HandlerCallDetails) -> bool:
    """The instrumentation's filter, as one string test: its own filters.service_name() splits
    the method name anew for every call, a measurable part of a short request."""
    return not details.method.startswith(_UNTRACED_PREFIXES)


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
