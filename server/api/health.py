"""A second port that serves grpc.health.v1.Health and nothing else, in plaintext, for probes.

The kubelet's native gRPC probes cannot speak TLS, so once the main port requires it they
cannot reach it. This port shares the main server's health servicer, so it answers exactly what
the main port would (NOT_SERVING as soon as the drain starts) and exposes nothing else: no
ExposureService, no reflection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import grpc
import grpc_health.v1.health
from grpc_health.v1 import health_pb2_grpc

from server.api.identity_free import HealthEdge
from server.listening import bind

#: Calls at once on the health port: a kubelet sends one probe at a time per container.
MAX_HEALTH_RPCS = 64


class HealthServicer(Protocol):
    """What the server uses of grpc_health's asyncio servicer: SERVING once it serves, and
    NOT_SERVING for good from the start of the drain. (gRPC serves its Check and Watch.)"""

    async def set(self, service: str, status: int) -> None: ...

    async def enter_graceful_shutdown(self) -> None: ...


def health_servicer() -> HealthServicer:
    """A new grpc_health.v1.health.aio.HealthServicer: the asyncio servicer, under the name
    grpcio-health-checking makes public for it (`health.aio`)."""
    # grpc-stubs' grpc_health/v1/health.pyi has the threaded servicer only, not `aio`; what we
    # use of it is typed by HealthServicer above.
    servicer: HealthServicer = grpc_health.v1.health.aio.HealthServicer()  # type: ignore[attr-defined]
    return servicer


async def start_health_server(
    listen: str, health: HealthServicer, options: Sequence[tuple[str, int]] = ()
) -> tuple[grpc.aio.Server, int]:
    """Serve `health` alone on `listen`; the server and the port it got (port 0: a free one).
    ListenError when it cannot listen there."""
    # Probes use Check; Watch streams are held open by whoever asks, so they are capped, all
    # calls here (none needs an identity) are capped below MAX_HEALTH_RPCS, and a request must
    # arrive within a second (server.api.identity_free.bounded). The concurrency bound keeps a
    # flood of probes from costing the server more than that.
    server = grpc.aio.server(
        interceptors=(HealthEdge(),), options=options, maximum_concurrent_rpcs=MAX_HEALTH_RPCS
    )
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = await bind(server, listen, flag="--health-listen")
    await server.start()
    return server, port
