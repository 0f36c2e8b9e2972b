"""A typed asyncio client for ExposureService."""

from __future__ import annotations

import enum
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

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
    DENIED = pb.OUTCOME_DENIED
    UPDATED = pb.OUTCOME_UPDATED
    DELETED = pb.OUTCOME_DELETED
    NOT_FOUND = pb.OUTCOME_NOT_FOUND
    # A value that a newer server sends and this client does not know yet (the proto's enum is
    # open): reported as UNKNOWN, never done, rather than failing the whole call.
    UNKNOWN = -1

    @classmethod
    def _missing_(cls, value: object) -> Outcome:
        return cls.UNKNOWN


def _enum_name(names: Callable[[Any], str], value: int, prefix: str) -> str:
    """The name of a proto enum value without its prefix; UNKNOWN(n) for one added to the
    proto after this client was built, where the generated Name() would raise."""
    try:
        return names(value).removeprefix(prefix)
    except ValueError:
        return f"UNKNOWN({value})"


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
        # Unset means "the same as port", as the server and the Go client read it.
        target: int | str = (
            message.target_port_name
            if which == "target_port_name"
            else message.target_port_number
            if which == "target_port_number"
            else message.port
        )
        return cls(
            port=message.port,
            target_port=target,
            protocol=_enum_name(pb.Protocol.Name, message.protocol, "PROTOCOL_"),
            node_port=message.node_port,
            name=message.name,
            app_protocol=message.app_protocol,
        )


@dataclass(frozen=True, slots=True)
class Change:
    """One field an apply changed (or, in a dry run, would change); "" means absent."""

    path: str
    before: str
    after: str


@dataclass(frozen=True, slots=True)
class Result:
    """What became of one rule of the request (match it to the rule by index). From
    apply_services also what changed, and index -1 for a pruned Service."""

    index: int
    rule: str
    outcome: Outcome
    service_name: str
    cluster_ip: str
    ports: tuple[Port, ...]
    error: str
    reason: str
    changes: tuple[Change, ...] = ()
    outcome_number: int = 0  # the outcome as sent: which value it was, when it reads as UNKNOWN

    @property
    def ok(self) -> bool:
        return self.outcome in _DONE

    @classmethod
    def from_proto(cls, message: pb.CreateServicesResponse | pb.ApplyServicesResponse) -> Result:
        changes: tuple[Change, ...] = ()
        if isinstance(message, pb.ApplyServicesResponse):
            changes = tuple(Change(c.path, c.before, c.after) for c in message.changes)
        return cls(
            index=message.index,
            rule=message.rule,
            outcome=Outcome(message.outcome),
            service_name=message.service_name,
            cluster_ip=message.cluster_ip,
            ports=tuple(Port.from_proto(port) for port in message.ports),
            error=message.error,
            reason=message.reason,
            changes=changes,
            outcome_number=message.outcome,
        )


# Outcomes that leave the Service as the caller asked.
_DONE = frozenset({Outcome.CREATED, Outcome.UNCHANGED, Outcome.UPDATED, Outcome.DELETED})


@dataclass(frozen=True, slots=True)
class ExposedService:
    """A Service the Deployment owns, and the canonical rule it was made from."""

    name: str
    type: str  # CLUSTER_IP, HEADLESS, NODE_PORT, LOAD_BALANCER, EXTERNAL_NAME
    rule: str
    cluster_ip: str
    ports: tuple[Port, ...]

    @classmethod
    def from_proto(cls, message: pb.ExposedService) -> ExposedService:
        return cls(
            name=message.name,
            type=_enum_name(pb.ServiceType.Name, message.type, "SERVICE_TYPE_"),
            rule=message.rule,
            cluster_ip=message.cluster_ip,
            ports=tuple(Port.from_proto(port) for port in message.ports),
        )


@dataclass(frozen=True, slots=True)
class Deleted:
    """What became of one Service a delete named (or, with all, found)."""

    service_name: str
    outcome: Outcome
    error: str
    reason: str

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.DELETED

    @classmethod
    def from_proto(cls, message: pb.DeleteServicesResponse) -> Deleted:
        return cls(
            service_name=message.service_name,
            outcome=Outcome(message.outcome),
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
        # aclosing: a caller that stops early cancels the call now, not when collected.
        async with aclosing(_streamed(call, Result.from_proto)) as items:
            async for item in items:
                yield item

    async def list_services(
        self, deployment: str, *, namespace: str = "", timeout: float | None = None
    ) -> list[ExposedService]:
        """The Services the Deployment owns, sorted by name; RequestFailed with NOT_FOUND when
        there is no such Deployment."""
        request = pb.ListServicesRequest(namespace=namespace, deployment=deployment)
        try:
            response = await self._stub.ListServices(request, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            raise RequestFailed(error.code(), error.details() or "") from error
        return [ExposedService.from_proto(service) for service in response.services]

    async def delete_services(
        self,
        deployment: str,
        names: Iterable[str] = (),
        *,
        all: bool = False,  # the request's own field name
        namespace: str = "",
        dry_run: bool = False,
        timeout: float | None = None,
    ) -> AsyncIterator[Deleted]:
        """Delete Services the Deployment owns, by name or all; one Deleted per Service."""
        request = pb.DeleteServicesRequest(
            namespace=namespace, deployment=deployment, names=list(names), all=all,
            dry_run=dry_run,
        )  # fmt: skip
        call = self._stub.DeleteServices(request, timeout=timeout)
        # aclosing: a caller that stops early cancels the call now, not when collected.
        async with aclosing(_streamed(call, Deleted.from_proto)) as items:
            async for item in items:
                yield item

    async def apply_services(
        self,
        deployment: str,
        rules: Iterable[Rule],
        *,
        namespace: str = "",
        prune: bool = False,
        force: bool = False,
        dry_run: bool = False,
        timeout: float | None = None,
    ) -> AsyncIterator[Result]:
        """Make the Deployment's Services what the rules say (server-side apply); one Result
        per rule with what changed, plus one (index -1) per Service pruned."""
        request = pb.ApplyServicesRequest(
            namespace=namespace,
            deployment=deployment,
            rules=[to_proto_rule(rule) for rule in rules],
            prune=prune,
            force=force,
            dry_run=dry_run,
        )
        call = self._stub.ApplyServices(request, timeout=timeout)
        # aclosing: a caller that stops early cancels the call now, not when collected.
        async with aclosing(_streamed(call, Result.from_proto)) as items:
            async for item in items:
                yield item


M = TypeVar("M")
T = TypeVar("T")


async def _streamed(
    call: grpc.aio.UnaryStreamCall[Any, M], convert: Callable[[M], T]
) -> AsyncGenerator[T, None]:
    """The messages of a server-streaming call, converted, with the call's failure as
    RequestFailed; the call is cancelled when the caller stops early."""
    try:
        async for message in call:
            yield convert(message)
    except grpc.aio.AioRpcError as error:
        raise RequestFailed(error.code(), error.details() or "") from error
    finally:
        call.cancel()


class TokenFile(grpc.AuthMetadataPlugin):
    """Sends `authorization: Bearer <token>` read from a file at every call: projected
    ServiceAccount tokens are rotated by the kubelet, so a token read once goes stale."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)

    def __call__(
        self, context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback
    ) -> None:
        try:
            token = self._path.read_text().strip()
        except OSError as error:
            callback((), OSError(f"token file {self._path}: {error.strerror or error}"))
            return
        if not token:
            callback((), ValueError(f"token file {self._path} is empty"))
            return
        callback((("authorization", f"Bearer {token}"),), None)


def channel_credentials(
    *,
    root_certificates: bytes | None = None,
    certificate_chain: bytes | None = None,
    private_key: bytes | None = None,
    token_file: str | os.PathLike[str] | None = None,
) -> grpc.ChannelCredentials | None:
    """TLS credentials (mutual when a certificate and key are given, the system's roots when
    root_certificates is None), with a bearer token from token_file on every call; None when
    nothing is given (plaintext). A token is never sent without TLS."""
    if (certificate_chain is None) != (private_key is None):
        raise ValueError("a client certificate and its private key go together: give both")
    tls = any(value is not None for value in (root_certificates, certificate_chain, private_key))
    if not tls and token_file is None:
        return None
    credentials = grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
    if token_file is not None:
        credentials = grpc.composite_channel_credentials(
            credentials, grpc.metadata_call_credentials(TokenFile(token_file), name="token-file")
        )
    return credentials


@asynccontextmanager
async def connect(
    target: str,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    root_certificates: bytes | None = None,
    certificate_chain: bytes | None = None,
    private_key: bytes | None = None,
    token_file: str | os.PathLike[str] | None = None,
) -> AsyncIterator[Client]:
    """A client over one channel to target ("host:port"), closed when the block ends.

    Plaintext unless TLS is asked for: root_certificates (PEM) to verify the server,
    certificate_chain and private_key (PEM) for mutual TLS, token_file for a bearer token read
    again for every call (TLS with the system's roots when no root_certificates are given).
    Or pass ready-made grpc credentials instead.
    """
    built = channel_credentials(
        root_certificates=root_certificates,
        certificate_chain=certificate_chain,
        private_key=private_key,
        token_file=token_file,
    )
    if built is not None and credentials is not None:
        raise ValueError("give either credentials or the TLS and token arguments, not both")
    credentials = credentials or built
    channel = (
        grpc.aio.secure_channel(target, credentials)
        if credentials is not None
        else grpc.aio.insecure_channel(target)
    )
    async with channel:
        yield Client(channel)
