"""The grpc.aio server: built the same way for tests and for `k8sailor-server`."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

# grpc_health.v1.health re-exports this as `aio`, but not in a way mypy --strict accepts.
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from kubernetes_asyncio import client

from k8sailor.v1 import exposure_pb2, exposure_pb2_grpc
from server.auth.gate import AccessControl
from server.auth.settings import AuthSettings
from server.auth.tls import ReloadingCertificates
from server.exposer import Exposer, Settings
from server.kube import CallObserver, Kube
from server.lifecycle import Lifecycle
from server.lifecycle_servicer import LifecycleServicer
from server.observability.serving import ServerTelemetry, server_telemetry

if TYPE_CHECKING:  # the SDK is imported only where tracing is on (server.observability)
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("k8sailor.server")

SERVICE_NAME: str = exposure_pb2.DESCRIPTOR.services_by_name["ExposureService"].full_name


@dataclass(frozen=True)
class ServerConfig:
    listen: str = "127.0.0.1:50051"
    max_in_flight: int = 32
    settings: Settings = field(default_factory=Settings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    metrics_listen: str = ""  # HOST:PORT for /metrics; empty: no metrics


@dataclass(frozen=True)
class RunningServer:
    server: grpc.aio.Server
    health: health_aio.HealthServicer
    port: int
    telemetry: ServerTelemetry = field(default_factory=ServerTelemetry)

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, refuse new RPCs, and give in-flight ones `grace` seconds."""
        await self.health.enter_graceful_shutdown()
        try:
            await self.server.stop(grace)
        finally:
            self.telemetry.close()


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
    problems = config.auth.problems(config.listen)
    if problems:
        raise ValueError("; ".join(problems))
    for warning in config.auth.warnings(config.listen):
        log.warning("%s", warning)
    telemetry = server_telemetry(api, config.metrics_listen, tracer_provider)
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
        observer=observer if observer is not None else telemetry.kube_observer,
    )
    server = grpc.aio.server(interceptors=telemetry.interceptors)
    access = AccessControl(kube, config.auth)
    lifecycle = Lifecycle(kube, config.settings)
    exposure_pb2_grpc.add_ExposureServiceServicer_to_server(
        LifecycleServicer(
            Exposer(kube, config.settings, tracer=telemetry.tracer),
            lifecycle,
            access,
            on_results=telemetry.on_results,
        ),
        server,
    )
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME],
        server,
    )  # fmt: skip
    auth = config.auth
    if auth.tls_cert_file is not None and auth.tls_private_key_file is not None:
        certificates = ReloadingCertificates(
            auth.tls_cert_file, auth.tls_private_key_file, auth.client_ca_file
        )
        port = server.add_secure_port(config.listen, certificates.credentials())
    else:
        port = server.add_insecure_port(config.listen)
    if port == 0:
        raise OSError(f"cannot listen on {config.listen}")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server=server, health=health_servicer, port=port, telemetry=telemetry)


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


async def serve_until_signalled(api: client.ApiClient, config: ServerConfig, grace: float) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with serving(api, config, grace) as running:
        host = config.listen.rsplit(":", 1)[0]
        log.info("k8sailor serving %s on %s:%d", SERVICE_NAME, host, running.port)
        await stop.wait()
        log.info("signal received: draining for up to %.1f s", grace)
    log.info("stopped")
