"""What operators see of k8sailor: Prometheus metrics, OpenTelemetry traces, and JSON logs.

- server.observability.metrics: every metric k8sailor exports (defined once, in one place,
  so the other modules import the objects they count with), the Kube call observer, and the
  /metrics endpoint.
- server.observability.grpc_metrics: the grpc.aio server interceptor that counts RPCs under
  go-grpc-prometheus's names, so stock gRPC dashboards and alerts work unchanged.
- server.observability.tracing: an SDK tracer provider from the standard OTEL_* environment
  (none at all when tracing is not configured), the gRPC server and aiohttp-client
  instrumentations.
- server.observability.logs: JSON or text log lines, and the trace fields of a log line.

Nothing here is imported by the exposer or below: they use the OpenTelemetry API only (a
no-op unless a provider is handed to them), and the adapter reports its calls through the
CallObserver protocol it declares.
"""
