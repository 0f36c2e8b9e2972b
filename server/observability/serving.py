"""Everything a server needs from observability, switched on as configured, in one value.

server.app builds its server from this: the interceptors, the observer and trace configs it
gives Kube, the callback that counts rule results, the tracer for rule spans, and what to undo
at stop.
Metrics are on when there is somewhere to serve them; tracing when there is a provider.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
from opentelemetry.trace import Tracer

from server.observability.endpoint import serve_metrics
from server.observability.grpc_metrics import PrometheusServerInterceptor
from server.observability.metrics import KubeCallMetrics, RuleCounter, count_rules
from server.wrapping import ServerInterceptor

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider


@dataclass(frozen=True)
class ServerTelemetry:
    interceptors: tuple[ServerInterceptor, ...] = ()
    kube_observer: KubeCallMetrics | None = None
    # For server.kube's session to the API server: a span per call, while sampled.
    kube_trace_configs: tuple[aiohttp.TraceConfig, ...] = ()
    on_results: RuleCounter | None = None
    tracer: Tracer | None = None
    metrics_port: int | None = None  # where /metrics is served, when it is
    undo: tuple[Callable[[], None], ...] = ()

    def close(self) -> None:
        """Stop serving /metrics (the server has stopped)."""
        for step in reversed(self.undo):
            step()


def server_telemetry(
    metrics_listen: str, tracer_provider: TracerProvider | None
) -> ServerTelemetry:
    """Metrics served on metrics_listen (off when empty), tracing into tracer_provider (off
    when None). Raises ListenError when /metrics cannot listen there."""
    interceptors: list[ServerInterceptor] = []
    undo: list[Callable[[], None]] = []
    observer, on_results, metrics_port, tracer = None, None, None, None
    trace_configs: tuple[aiohttp.TraceConfig, ...] = ()
    if metrics_listen:
        endpoint = serve_metrics(metrics_listen)
        undo.append(endpoint.stop)
        metrics_port = endpoint.port
        interceptors.append(PrometheusServerInterceptor())
        observer, on_results = KubeCallMetrics(), count_rules
    if tracer_provider is not None:
        # Imported here: the SDK and the instrumentations take a good part of a second to
        # import on a busy machine, which a server without tracing need not spend at start.
        from server.observability import tracing

        interceptors.append(tracing.server_interceptor(tracer_provider))
        trace_configs = (tracing.api_call_trace_config(tracer_provider),)
        tracer = tracer_provider.get_tracer("k8sailor")
    return ServerTelemetry(
        interceptors=tuple(interceptors),
        kube_observer=observer,
        kube_trace_configs=trace_configs,
        on_results=on_results,
        tracer=tracer,
        metrics_port=metrics_port,
        undo=tuple(undo),
    )
