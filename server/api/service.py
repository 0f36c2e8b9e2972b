"""The one registered servicer of k8sailor.v1.ExposureService: each RPC handed to the servicer
of its concern (server.api.exposure for CreateServices, server.api.lifecycle for the rest)."""

from __future__ import annotations

import grpc

from k8sailor.v1 import exposure_pb2 as pb
from k8sailor.v1 import exposure_pb2_grpc as pb_grpc
from server.api.exposure import ExposureServicer
from server.api.lifecycle import LifecycleServicer


class ExposureService(pb_grpc.ExposureServiceServicer):
    """Delegation only: no logic lives here, so that what the generated base class wants (one
    class with every RPC) does not decide how the RPCs are split."""

    def __init__(self, exposure: ExposureServicer, lifecycle: LifecycleServicer) -> None:
        self._exposure = exposure
        self._lifecycle = lifecycle

    # The streaming RPCs write through context.write() (server.api.calls.write_each) rather
    # than being async generators; the generated stub only models the generator form.
    async def CreateServices(  # type: ignore[override]  # noqa: N802 - the RPC's name
        self,
        request: pb.CreateServicesRequest,
        context: grpc.aio.ServicerContext[pb.CreateServicesRequest, pb.CreateServicesResponse],
    ) -> None:
        await self._exposure.create_services(request, context)

    async def ListServices(  # noqa: N802 - the RPC's name
        self,
        request: pb.ListServicesRequest,
        context: grpc.aio.ServicerContext[pb.ListServicesRequest, pb.ListServicesResponse],
    ) -> pb.ListServicesResponse:
        return await self._lifecycle.list_services(request, context)

    async def DeleteServices(  # type: ignore[override]  # noqa: N802 - see CreateServices
        self,
        request: pb.DeleteServicesRequest,
        context: grpc.aio.ServicerContext[pb.DeleteServicesRequest, pb.DeleteServicesResponse],
    ) -> None:
        await self._lifecycle.delete_services(request, context)

    async def ApplyServices(  # type: ignore[override]  # noqa: N802 - see CreateServices
        self,
        request: pb.ApplyServicesRequest,
        context: grpc.aio.ServicerContext[pb.ApplyServicesRequest, pb.ApplyServicesResponse],
    ) -> None:
        await self._lifecycle.apply_services(request, context)
