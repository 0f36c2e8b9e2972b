"""A typed asyncio client for ExposureService."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc

from k8sailor.v1 import exposure_pb2 as pb
from k8sailor.v1 import exposure_pb2_grpc as pb_grpc

Rule = str | pb.ServiceSpec


class Outcome(enum.Enum):
    CREATED = pb.OUTCOME_CREATED
    UNCHANGED = pb.OUTCOME_UNCHANGED
    INVALID = pb.OUTCOME_INVALID
    CONFLICT = pb.OUTCOME_CONFLICT
    FAILED = pb.OUTCOME_FAILED


@dataclass(frozen=True, slots=True)
class Port:
    port: int
    target_port: int | str
    protocol: str
    node_port: int = 0
    name: str = ""
    app_protocol: str = ""

    def __str__(self) -> str:
        """The port in rule notation: [nodePort:]port:target/PROTOCOL."""
        prefix = f"{self.node_port}:" if self.node_port else ""
        return f"{prefix}{self.port}:{self.target_port}/{self.protocol}"

    @classmethod
    def from_proto(cls, message: pb.ServicePort) -> Port:
        which = message.WhichOneof("target_port")
        target: int | str = (
            message.target_port_name if which == "target_port_name" else message.target_port_number
        )
        return cls(
            port=message.port,
            target_port=target,
            protocol=pb.Protocol.Name(message.protocol).removeprefix("PROTOCOL_"),
            node_port=message.node_port,
            name=message.name,
            app_protocol=message.app_protocol,
        )


@dataclass(frozen=True, slots=True)
class Result:
    """What became of one rule of the request (match it to the rule by index)."""

    index: int
    rule: str
    outcome: Outcome
    service_name: str
    cluster_ip: str
    ports: tuple[Port, ...]
    error: str
    reason: str

    @property
    def ok(self) -> bool:
        return self.outcome in (Outcome.CREATED, Outcome.UNCHANGED)

    @classmethod
    def from_proto(cls, message: pb.CreateServicesResponse) -> Result:
        return cls(
            index=message.index,
            rule=message.rule,
            outcome=Outcome(message.outcome),
            service_name=message.service_name,
            cluster_ip=message.cluster_ip,
            ports=tuple(Port.from_proto(port) for port in message.ports),
            error=message.error,
            reason=message.reason,
        )


class RequestFailed(Exception):
    """The request as a whole failed: code is the gRPC status (NOT_FOUND, UNAVAILABLE, ...)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


def to_proto_rule(rule: Rule) -> pb.Rule:
    if isinstance(rule, str):
        return pb.Rule(raw=rule)
    if isinstance(rule, pb.ServiceSpec):
        return pb.Rule(spec=rule)
    raise TypeError(f"a rule is a str or a ServiceSpec, not {type(rule).__name__}")


class Client:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = pb_grpc.ExposureServiceStub(channel)

    async def create_services(
        self,
        deployment: str,
        rules: Iterable[Rule],
        *,
        namespace: str = "",
        dry_run: bool = False,
        timeout: float | None = None,
    ) -> AsyncIterator[Result]:
        """Yield one Result per rule as the server finishes it; raise RequestFailed when the
        request as a whole fails (no such Deployment, server or cluster unreachable, ...)."""
        request = pb.CreateServicesRequest(
            namespace=namespace,
            deployment=deployment,
            rules=[to_proto_rule(rule) for rule in rules],
            dry_run=dry_run,
        )
        call = self._stub.CreateServices(request, timeout=timeout)
        try:
            async for message in call:
                yield Result.from_proto(message)
        except grpc.aio.AioRpcError as error:
            raise RequestFailed(error.code(), error.details() or "") from error
        finally:
            call.cancel()


@asynccontextmanager
async def connect(
    target: str, *, credentials: grpc.ChannelCredentials | None = None
) -> AsyncIterator[Client]:
    """A client over one channel to target ("host:port"), closed when the block ends."""
    channel = (
        grpc.aio.secure_channel(target, credentials)
        if credentials is not None
        else grpc.aio.insecure_channel(target)
    )
    async with channel:
        yield Client(channel)
