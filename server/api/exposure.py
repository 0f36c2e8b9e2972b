"""gRPC glue: protobuf in, server.domain.exposer in the middle, protobuf and status codes out."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence

import grpc
from google.protobuf import text_format

from k8sailor.v1 import exposure_pb2 as pb
from k8sailor.v1 import exposure_pb2_grpc as pb_grpc
from server.api import edge
from server.auth.errors import AuthError
from server.auth.gate import AccessControl
from server.auth.identity import Caller
from server.domain.cooperative import in_slices
from server.domain.create import Exposer, ExposeRequest
from server.domain.errors import (
    BadRequest,
    ClusterFailed,
    ClusterForbidden,
    ClusterUnavailable,
    DeploymentNotFound,
    DeploymentUnusable,
    RequestError,
)
from server.domain.outcomes import Outcome, RuleResult
from server.domain.requests import rule_types
from server.observability.logs import Fields, trace_fields
from server.rules import (
    MAX_PORTS,
    MAX_RULE_LENGTH,
    PortRule,
    Protocol,
    RuleError,
    ServiceRule,
    ServiceType,
)

log = logging.getLogger("k8sailor.requests")

_TYPES = {
    pb.SERVICE_TYPE_CLUSTER_IP: ServiceType.CLUSTER_IP,
    pb.SERVICE_TYPE_HEADLESS: ServiceType.HEADLESS,
    pb.SERVICE_TYPE_NODE_PORT: ServiceType.NODE_PORT,
    pb.SERVICE_TYPE_LOAD_BALANCER: ServiceType.LOAD_BALANCER,
    pb.SERVICE_TYPE_EXTERNAL_NAME: ServiceType.EXTERNAL_NAME,
}
# Kubernetes defaults a port's protocol to TCP, and so do we.
_PROTOCOLS = {
    pb.PROTOCOL_UNSPECIFIED: Protocol.TCP,
    pb.PROTOCOL_TCP: Protocol.TCP,
    pb.PROTOCOL_UDP: Protocol.UDP,
    pb.PROTOCOL_SCTP: Protocol.SCTP,
}
_PROTOCOLS_TO_PB = {
    Protocol.TCP: pb.PROTOCOL_TCP,
    Protocol.UDP: pb.PROTOCOL_UDP,
    Protocol.SCTP: pb.PROTOCOL_SCTP,
}
_OUTCOMES = {
    Outcome.CREATED: pb.OUTCOME_CREATED,
    Outcome.UNCHANGED: pb.OUTCOME_UNCHANGED,
    Outcome.INVALID: pb.OUTCOME_INVALID,
    Outcome.CONFLICT: pb.OUTCOME_CONFLICT,
    Outcome.FAILED: pb.OUTCOME_FAILED,
    Outcome.DENIED: pb.OUTCOME_DENIED,
    Outcome.UPDATED: pb.OUTCOME_UPDATED,
    Outcome.DELETED: pb.OUTCOME_DELETED,
    Outcome.NOT_FOUND: pb.OUTCOME_NOT_FOUND,
}


def rule_from_proto(index: int, rule: pb.Rule) -> str | ServiceRule | RuleError:
    which = rule.WhichOneof("rule")
    if which == "raw":
        return rule.raw
    if which == "spec":
        return spec_to_rule(index, rule.spec)
    return RuleError(index, "", "rule", None, "the rule is empty: set either raw or spec")


def _spec_text(spec: pb.ServiceSpec) -> str:
    """A spec that is not even a rule yet, shown as its fields, for errors only."""
    return "{" + text_format.MessageToString(spec, as_one_line=True) + "}"


def spec_to_rule(index: int, spec: pb.ServiceSpec) -> ServiceRule | RuleError:
    """The structured form in domain terms; checking it is server.rules.check_rule's job.

    Size comes first, before any field is read: the limits of text rules, in encoded bytes.
    """
    size = spec.ByteSize()
    if size > MAX_RULE_LENGTH:
        return RuleError(
            index,
            f"{{a spec of {size} bytes}}",
            "",
            None,
            f"the spec is {size} bytes long encoded; a rule may be at most {MAX_RULE_LENGTH}: "
            "split it into several rules",
        )
    if len(spec.ports) > MAX_PORTS:
        return RuleError(
            index,
            # Not the spec's text: thousands of ports, in every rule of a large request.
            f"{{a spec of {len(spec.ports)} ports}}",
            f"ports[{MAX_PORTS}]",
            None,
            f"the rule has {len(spec.ports)} ports; a rule may have at most {MAX_PORTS} ports: "
            "split it into several rules",
        )
    type_ = _TYPES.get(spec.type)
    if type_ is None:
        known = ", ".join(pb.ServiceType.Name(value) for value in _TYPES)
        return RuleError(index, _spec_text(spec), "type", None, f"type must be one of {known}")
    ports = []
    for position, port in enumerate(spec.ports):
        protocol = _PROTOCOLS.get(port.protocol)
        if protocol is None:
            return RuleError(
                index, _spec_text(spec), f"ports[{position}].protocol", None, "unknown protocol"
            )
        which = port.WhichOneof("target_port")
        target: int | str = (
            port.target_port_name
            if which == "target_port_name"
            else port.target_port_number
            if which == "target_port_number"
            else port.port
        )
        ports.append(
            PortRule(
                port=port.port,
                target_port=target,
                protocol=protocol,
                node_port=port.node_port or None,
                app_protocol=port.app_protocol or None,
                name=port.name or None,
            )
        )
    return ServiceRule(
        type=type_,
        ports=tuple(ports),
        name=spec.name or None,
        external_name=spec.external_name or None,
    )


def port_to_proto(port: PortRule) -> pb.ServicePort:
    message = pb.ServicePort(
        name=port.name or "",
        port=port.port,
        node_port=port.node_port or 0,
        protocol=_PROTOCOLS_TO_PB[port.protocol],
        app_protocol=port.app_protocol or "",
    )
    if isinstance(port.target_port, str):
        message.target_port_name = port.target_port
    else:
        message.target_port_number = port.target_port
    return message


def outcome_to_proto(outcome: Outcome) -> pb.Outcome.ValueType:
    return _OUTCOMES[outcome]


def result_to_proto(result: RuleResult) -> pb.CreateServicesResponse:
    return pb.CreateServicesResponse(
        index=result.index,
        rule=result.rule,
        outcome=_OUTCOMES[result.outcome],
        service_name=result.service_name,
        cluster_ip=result.cluster_ip,
        ports=[port_to_proto(port) for port in result.ports],
        error=result.error,
        reason=result.reason,
    )


def status_for(error: Exception) -> tuple[grpc.StatusCode, str]:
    """The gRPC status for a request-level failure (the edge's table for the caller's
    identity and rights, server.api.edge.auth_status, and ours for the rest)."""
    if isinstance(error, AuthError):
        return edge.auth_status(error)
    if isinstance(error, BadRequest):
        return grpc.StatusCode.INVALID_ARGUMENT, str(error)
    if isinstance(error, DeploymentNotFound):
        return grpc.StatusCode.NOT_FOUND, str(error)
    if isinstance(error, DeploymentUnusable):
        return grpc.StatusCode.FAILED_PRECONDITION, str(error)
    if isinstance(error, ClusterForbidden):
        return grpc.StatusCode.PERMISSION_DENIED, str(error)
    if isinstance(error, ClusterUnavailable):
        return grpc.StatusCode.UNAVAILABLE, str(error)
    if isinstance(error, ClusterFailed):
        return grpc.StatusCode.INTERNAL, str(error)
    return grpc.StatusCode.INTERNAL, str(error)


class ExposureServicer(pb_grpc.ExposureServiceServicer):
    """CreateServices; server.api.lifecycle adds the RPCs that manage what it made."""

    def __init__(
        self,
        exposer: Exposer,
        access: AccessControl | None = None,
        *,
        on_results: Callable[[Sequence[RuleResult]], None] | None = None,
    ) -> None:
        """access: what callers may do (the edge, server.api.edge, has authenticated them with
        the same AccessControl); None: no authorization at all. on_results: told every
        request's rule results, as the request ends (metrics)."""
        self._exposer = exposer
        self._access = access
        self._on_results = on_results

    # The handler writes through context.write() rather than being an async generator, so that
    # leaving the `async with` closes the exposer's generator - and cancels its tasks - at once
    # when the caller goes away; the generated stub only models the generator form.
    async def CreateServices(  # type: ignore[override]  # noqa: N802 - the RPC's name
        self,
        request: pb.CreateServicesRequest,
        context: grpc.aio.ServicerContext[pb.CreateServicesRequest, pb.CreateServicesResponse],
    ) -> None:
        started = time.monotonic()
        # Authenticated by the edge (server.api.edge) before the request was decoded; so were its
        # size and its number of rules checked.
        caller = edge.caller()
        domain = ExposeRequest(
            namespace=request.namespace or "default",
            deployment=request.deployment,
            # In slices: a large request of structured rules is many thousand ports to read.
            rules=await in_slices(
                rule_from_proto(index, rule) for index, rule in enumerate(request.rules)
            ),
            dry_run=request.dry_run,
        )
        remaining = context.time_remaining()
        deadline = None if remaining is None else asyncio.get_running_loop().time() + remaining
        results: list[RuleResult] = []
        status, message = grpc.StatusCode.OK, ""
        try:
            permissions = None
            # Parsed once, here: authorization decides on the rules' types, and the exposer
            # builds from the same parsed rules.
            parsed = await self._exposer.parse(domain)
            if self._access is not None and self._access.authorizing:
                # With no rule that parses, nothing is asked, and nothing is read either: the
                # exposer answers such a request from the rules alone.
                permissions = await self._access.permissions(
                    caller, domain.namespace, domain.deployment, rule_types(parsed)
                )
            domain = dataclasses.replace(domain, parsed=parsed, permissions=permissions)
            async with contextlib.aclosing(self._exposer.expose(domain, deadline=deadline)) as run:
                async for result in run:
                    results.append(result)
                    await context.write(result_to_proto(result))
        except (RequestError, AuthError) as error:
            status, message = status_for(error)
        except asyncio.CancelledError:
            status, message = grpc.StatusCode.CANCELLED, "the caller went away"
            raise
        except Exception as error:  # a bug of ours: logged in full, reported in one sentence
            log.exception("CreateServices failed unexpectedly")
            status, message = grpc.StatusCode.INTERNAL, f"internal error: {error}"
        finally:
            seconds = time.monotonic() - started
            _log_request(domain, caller, results, status, message, seconds, context)
            if self._on_results is not None:
                self._on_results(results)
        if status is not grpc.StatusCode.OK:
            await context.abort(status, message)


def _log_request(
    request: ExposeRequest,
    caller: Caller,
    results: list[RuleResult],
    status: grpc.StatusCode,
    message: str,
    seconds: float,
    context: grpc.aio.ServicerContext[pb.CreateServicesRequest, pb.CreateServicesResponse],
) -> None:
    """One structured line per request: who asked for what, and what became of each rule.

    It is the audit record: fields are added, never renamed or removed.
    """
    outcomes: dict[str, int] = {}
    for result in results:
        outcomes[result.outcome.value] = outcomes.get(result.outcome.value, 0) + 1
    line = {
        "event": "CreateServices",
        "user": caller.user,
        "groups": list(caller.groups),
        "authn": caller.method.value,
        # Denied as a whole (PERMISSION_DENIED) or for some rules (DENIED results).
        "denied": status is grpc.StatusCode.PERMISSION_DENIED or _DENIED in outcomes,
        "namespace": request.namespace,
        "deployment": request.deployment,
        "rules": len(request.rules),
        "dry_run": request.dry_run,
        "status": status.name,
        "message": message,
        "ms": round(seconds * 1000, 1),
        "outcomes": outcomes,
        "results": [_result_fields(result) for result in sorted(results, key=_index)],
        "peer": context.peer(),
        **trace_fields(),
    }
    log.info(Fields(line))


_DENIED = Outcome.DENIED.value


def _index(result: RuleResult) -> int:
    return result.index


def _result_fields(result: RuleResult) -> dict[str, object]:
    fields: dict[str, object] = {
        "index": result.index,
        "outcome": result.outcome.value,
        "service": result.service_name,
    }
    if result.reason:
        fields["reason"] = result.reason
    return fields
