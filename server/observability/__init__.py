"""What operators see of k8sailor: Prometheus metrics, OpenTelemetry traces, and JSON logs.

- server.observability.metrics: every metric k8sailor exports (defined once, in one place,
  so the other modules import the objects they count with), the Kube call observer, and
  count_rules, which counts the rule results the servicers hand it.
- server.observability.cache_metrics: the Deployment cache's metrics, and the observer that
  counts them.
- server.observability.endpoint: the HTTP server behind /metrics (a bounded pool of threads
  of its own, each connection given a deadline).
- server.observability.grpc_metrics: the grpc.aio server interceptor that counts RPCs under
  go-grpc-prometheus's names, so stock gRPC dashboards and alerts work unchanged.
- server.observability.tracing: an SDK tracer provider from the standard OTEL_* environment
  (none at all when tracing is not configured), the gRPC server and aiohttp-client
  instrumentations.
- server.observability.logs: JSON or text log lines, and the trace fields of a log line.
- server.observability.serving: all of the above that a server needs, switched on as
  configured, in one value that server.app wires in.

Nothing here is imported by the domain or the Kubernetes adapter, and nothing here imports
them: the create flow (server.domain.create) and the other flows use the OpenTelemetry API
only (a no-op unless a provider is handed to them), and server.kube reports its calls and its
cache through the CallObserver and CacheObserver protocols it declares, which the observers
here fit by their methods alone.
"""
