"""The grpc.aio server: built the same way for tests and for `k8sailor-server`."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from kubernetes_asyncio import client

from k8sailor.v1 import exposure_pb2, exposure_pb2_grpc
from server.api.edge import Edge
from server.api.exposure import ExposureServicer
from server.api.health import HealthServicer, health_servicer, start_health_server
from server.api.lifecycle import LifecycleServicer
from server.api.service import ExposureService
from server.api.wire import max_request_bytes
from server.auth.gate import AccessControl
from server.auth.tls import ReloadingCertificates
from server.config import ServerConfig
from server.domain.create import Exposer
from server.domain.lifecycle import Lifecycle
from server.kube import CallObserver, Kube, RetryPolicy
from server.kube.deployments import DeploymentCache
from server.kube.fairness import Shares
from server.listening import ListenError, bind, bind_socket
from server.observability.cache_metrics import DeploymentCacheMetrics
from server.observability.metrics import KUBE_CONCURRENCY_LIMIT
from server.observability.serving import ServerTelemetry, server_telemetry

if TYPE_CHECKING:  # the SDK is imported only where tracing is on (server.observability)
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("k8sailor.server")

SERVICE_NAME: str = exposure_pb2.DESCRIPTOR.services_by_name["ExposureService"].full_name


__all__ = [
    "GRPC_OPTIONS",
    "ListenError",
    "RunningServer",
    "ServerConfig",
    "grpc_options",
    "start_server",
]

MiB: Final = 1024 * 1024

#: Chosen, not inherited; the README's "Server" section lists them and says why.
GRPC_OPTIONS: Final[tuple[tuple[str, int], ...]] = (
    # A port that is already in use is an error. gRPC's default (SO_REUSEPORT on) lets a
    # second server share the port silently, and callers then land on either.
    ("grpc.so_reuseport", 0),
    # A result is a few hundred bytes; this only guards against a bug of ours.
    ("grpc.max_send_message_length", 4 * MiB),
    # Calls at once on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS); more wait
    # in the client. 100 is the HTTP/2 recommendation and grpc-go's usual figure.
    ("grpc.max_concurrent_streams", 100),
    # Clients may ping every 10 s (grpc-go's smallest keepalive time), also between calls;
    # gRPC's default (5 min, and only during calls) makes such clients be cut off with
    # GOAWAY too_many_pings. Two pings faster than that end the connection.
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_ping_strikes", 2),
    # The server pings a connection idle for 2 min and drops it after 20 s without an
    # answer, so a caller that vanished (no FIN) does not hold a stream forever.
    ("grpc.keepalive_time_ms", 120_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    # No connection lives for ever, busy or not: after 30 min (gRPC adds up to 10% of jitter)
    # the server sends GOAWAY, and calls still running get 5 min more (a CreateServices ends
    # within its deadline; a health Watch or reflection stream is cut and re-opened by its
    # client). Clients then reconnect, which also spreads them over new replicas.
    ("grpc.max_connection_age_ms", 30 * 60_000),
    ("grpc.max_connection_age_grace_ms", 5 * 60_000),
    # A connection with no call for 15 min is closed (GOAWAY; the client reconnects when it
    # next calls), so idle connections do not pile up.
    ("grpc.max_connection_idle_ms", 15 * 60_000),
)

#: The most gRPC receives in one message: what the largest request of --max-rules rules can
#: need (server.api.wire), and never more than 4 MiB (gRPC's own default). Anything bigger is
#: refused by gRPC itself with RESOURCE_EXHAUSTED, before it is decoded or authenticated.
MAX_RECEIVE_BYTES: Final = 4 * MiB
#: The health port receives HealthCheckRequests only: a service name.
HEALTH_RECEIVE_BYTES: Final = 4096


def grpc_options(max_rules: int) -> tuple[tuple[str, int], ...]:
    """GRPC_OPTIONS and the receive limit that --max-rules needs."""
    receive = min(MAX_RECEIVE_BYTES, max_request_bytes(max_rules))
    return (*GRPC_OPTIONS, ("grpc.max_receive_message_length", receive))


@dataclass(frozen=True)
class RunningServer:
    server: grpc.aio.Server
    health: HealthServicer
    port: int
    telemetry: ServerTelemetry = field(default_factory=ServerTelemetry)
    deployments: DeploymentCache | None = None
    kube: Kube | None = None  # closed at stop: its session to the API server
    # The plaintext health port (--health-listen), when there is one.
    health_server: grpc.aio.Server | None = None
    health_port: int | None = None

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, refuse new RPCs, and give in-flight ones `grace` seconds."""
        await self.health.enter_graceful_shutdown()
        try:
            await self.server.stop(grace)
        finally:
            if self.deployments is not None:
                await self.deployments.stop()
            if self.kube is not None:
                await self.kube.close()
            self.telemetry.close()
            # Last, so that probes see NOT_SERVING for the whole drain, not a closed port.
            if self.health_server is not None:
                await self.health_server.stop(None)


async def start_server(
    api: client.ApiClient,
    config: ServerConfig,
    *,
    tracer_provider: TracerProvider | None = None,
    observer: CallObserver | None = None,
) -> RunningServer:
    """Start serving on config.listen (port 0 picks a free one; see RunningServer.port).

    Traces go to tracer_provider; without one, nothing is traced (see server.observability).
    observer, if given, is told about every call to the API server instead of the metrics
    (tests use it to see what reached the API server).
    """
    # config was checked when it was made (ServerConfig is frozen and validated), auth too.
    for warning in config.auth.warnings(config.listen):
        log.warning("%s", warning)
    telemetry = server_telemetry(config.metrics_listen, tracer_provider)
    try:
        return await _start(api, config, telemetry, observer)
    except BaseException:
        telemetry.close()
        raise


async def _start(
    api: client.ApiClient,
    config: ServerConfig,
    telemetry: ServerTelemetry,
    observer: CallObserver | None,
) -> RunningServer:
    kube = Kube(
        api,
        max_in_flight=config.max_in_flight,
        adaptive=config.concurrency_limit == "adaptive",
        observer=observer if observer is not None else telemetry.kube_observer,
        retry=RetryPolicy(max_retry_seconds=config.max_retry_seconds),
        trace_configs=telemetry.kube_trace_configs,
    )
    metrics = telemetry.kube_observer is not None
    if metrics:
        KUBE_CONCURRENCY_LIMIT.set_function(lambda: kube.concurrency_limit)
    deployments = None
    if config.deployment_cache == "watch":
        deployments = DeploymentCache(
            kube,
            config.watch_namespaces,
            observer=DeploymentCacheMetrics() if metrics else None,
        )
    # Whose turn each caller's API calls take (server.kube.fairness): one Shares for the edge,
    # which sets it for every RPC, and for the access reviews made for a caller, so that a caller
    # has one turn, whichever of them calls.
    shares = Shares()
    access = AccessControl(kube, config.auth, shares=shares)
    server = grpc.aio.server(
        # The edge last (innermost): metrics and traces count what it refuses.
        interceptors=(*telemetry.interceptors, Edge(access, config.max_rules, shares)),
        options=grpc_options(config.max_rules),
        # Beyond it a call is refused at once with RESOURCE_EXHAUSTED, health checks too.
        maximum_concurrent_rpcs=config.max_concurrent_rpcs,
    )
    exposer = Exposer(kube, config.settings, tracer=telemetry.tracer, deployments=deployments)
    lifecycle = Lifecycle(kube, config.settings, tracer=telemetry.tracer)
    exposure_pb2_grpc.add_ExposureServiceServicer_to_server(
        ExposureService(
            ExposureServicer(exposer, access, count_rules=telemetry.on_results),
            LifecycleServicer(lifecycle, access, count_rules=telemetry.on_results),
        ),
        server,
    )
    health = health_servicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME],
        server,
    )  # fmt: skip
    auth = config.auth
    credentials = None
    if auth.tls_cert_file is not None and auth.tls_private_key_file is not None:
        certificates = ReloadingCertificates(
            auth.tls_cert_file, auth.tls_private_key_file, auth.client_ca_file
        )
        credentials = certificates.credentials()
    port = await bind(server, config.listen, credentials)
    if auth.mesh_listen is not None:
        # Plaintext: the sidecar has done mTLS. The only listener believing its header.
        await bind_socket(server, auth.mesh_listen, flag="--mesh-listen")
    health_server, health_port = None, None
    if config.health_listen:
        try:
            health_server, health_port = await start_health_server(
                config.health_listen,
                health,
                (*GRPC_OPTIONS, ("grpc.max_receive_message_length", HEALTH_RECEIVE_BYTES)),
            )
        except ListenError:
            await server.stop(None)
            raise
    if deployments is not None:
        await deployments.start()
    await server.start()
    for name in ("", SERVICE_NAME):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(
        server=server,
        health=health,
        port=port,
        telemetry=telemetry,
        deployments=deployments,
        kube=kube,
        health_server=health_server,
        health_port=health_port,
    )


@asynccontextmanager
async def serving(
    api: client.ApiClient,
    config: ServerConfig,
    grace: float = 5.0,
    *,
    tracer_provider: TracerProvider | None = None,
    observer: CallObserver | None = None,
) -> AsyncIterator[RunningServer]:
    running = await start_server(api, config, tracer_provider=tracer_provider, observer=observer)
    try:
        yield running
    finally:
        await running.stop(grace)


async def serve_until_signalled(
    api: client.ApiClient,
    config: ServerConfig,
    *,
    tracer_provider: TracerProvider | None = None,
) -> int:
    """Serve until SIGTERM or SIGINT, then drain for config.grace seconds; 0 when drained.

    A second signal during the drain cancels the calls still running and returns 1 at once:
    whoever sends it (an impatient person, an orchestrator) wants the process gone.
    """
    signals: asyncio.Queue[signal.Signals] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, signals.put_nowait, signum)
    try:
        running = await start_server(api, config, tracer_provider=tracer_provider)
        host = config.listen.rsplit(":", 1)[0]
        log.info("k8sailor serving %s on %s:%d", SERVICE_NAME, host, running.port)
        if config.auth.mesh_listen is not None:
            log.info("for the mesh sidecar only, on unix:%s", config.auth.mesh_listen)
        if config.health_listen:
            log.info(
                "health only, plaintext, on %s:%d",
                config.health_listen.rsplit(":", 1)[0],
                running.health_port,
            )
        received = await signals.get()
        log.info("%s received: draining for up to %.1f s", received.name, config.grace)
        drain = asyncio.create_task(running.stop(config.grace))
        second = asyncio.create_task(signals.get())
        await asyncio.wait({drain, second}, return_when=asyncio.FIRST_COMPLETED)
        if drain.done():
            second.cancel()
            await drain
            log.info("stopped")
            return 0
        log.warning("%s received again: cancelling the calls still running", second.result().name)
        await running.server.stop(None)
        await drain
        return 1
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
