"""Protobuf <-> domain: every request turned into its domain request, every domain result into
its message. No gRPC calls, no status codes and no logging here: only the two vocabularies."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from google.protobuf import text_format

from k8sailor.v1 import exposure_pb2 as pb
from server.domain.cooperative import in_slices
from server.domain.create import ExposeRequest
from server.domain.lifecycle_requests import ApplyRequest, DeleteRequest
from server.domain.lifecycle_results import ApplyResult, DeleteResult, ExposedService
from server.domain.outcomes import Outcome, RuleResult
from server.rules import (
    MAX_PORTS,
    MAX_RULE_LENGTH,
    PortRule,
    Protocol,
    RuleError,
    ServiceRule,
    ServiceType,
)

_TYPES = {
    pb.SERVICE_TYPE_CLUSTER_IP: ServiceType.CLUSTER_IP,
    pb.SERVICE_TYPE_HEADLESS: ServiceType.HEADLESS,
    pb.SERVICE_TYPE_NODE_PORT: ServiceType.NODE_PORT,
    pb.SERVICE_TYPE_LOAD_BALANCER: ServiceType.LOAD_BALANCER,
    pb.SERVICE_TYPE_EXTERNAL_NAME: ServiceType.EXTERNAL_NAME,
}
_TYPES_TO_PB = {type_: value for value, type_ in _TYPES.items()}
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

# ------------------------------------------------------------------------------ requests


def namespace_of(
    request: pb.CreateServicesRequest
    | pb.ListServicesRequest
    | pb.DeleteServicesRequest
    | pb.ApplyServicesRequest,
) -> str:
    """The request's namespace: none given is "default", as kubectl has it."""
    return request.namespace or "default"


async def expose_request(request: pb.CreateServicesRequest) -> ExposeRequest:
    return ExposeRequest(
        namespace=namespace_of(request),
        deployment=request.deployment,
        rules=await _rules(request.rules),
        dry_run=request.dry_run,
    )


def delete_request(request: pb.DeleteServicesRequest) -> DeleteRequest:
    return DeleteRequest(
        namespace=namespace_of(request),
        deployment=request.deployment,
        names=list(request.names),
        all=request.all,
        dry_run=request.dry_run,
    )


async def apply_request(request: pb.ApplyServicesRequest) -> ApplyRequest:
    return ApplyRequest(
        namespace=namespace_of(request),
        deployment=request.deployment,
        rules=await _rules(request.rules),
        prune=request.prune,
        force=request.force,
        dry_run=request.dry_run,
    )


async def _rules(rules: Iterable[pb.Rule]) -> list[str | ServiceRule | RuleError]:
    # In slices: a large request of structured rules is many thousand ports to read, which must
    # not keep other calls waiting.
    return await in_slices(rule_from_proto(index, rule) for index, rule in enumerate(rules))


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


# ------------------------------------------------------------------------------- results


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


def _rule_result_fields(result: RuleResult) -> dict[str, Any]:
    """The fields a rule's result has in both CreateServices' and ApplyServices' answers."""
    return {
        "index": result.index,
        "rule": result.rule,
        "outcome": _OUTCOMES[result.outcome],
        "service_name": result.service_name,
        "cluster_ip": result.cluster_ip,
        "ports": [port_to_proto(port) for port in result.ports],
        "error": result.error,
        "reason": result.reason,
    }


def result_to_proto(result: RuleResult) -> pb.CreateServicesResponse:
    return pb.CreateServicesResponse(**_rule_result_fields(result))


def exposed_to_proto(service: ExposedService) -> pb.ExposedService:
    return pb.ExposedService(
        name=service.name,
        type=_TYPES_TO_PB[service.type],
        rule=service.rule,
        cluster_ip=service.cluster_ip,
        ports=[port_to_proto(port) for port in service.ports],
    )


def listed_to_proto(services: Sequence[ExposedService]) -> pb.ListServicesResponse:
    return pb.ListServicesResponse(services=[exposed_to_proto(s) for s in services])


def delete_result_to_proto(result: DeleteResult) -> pb.DeleteServicesResponse:
    return pb.DeleteServicesResponse(
        service_name=result.service_name,
        outcome=_OUTCOMES[result.outcome],
        error=result.error,
        reason=result.reason,
    )


def apply_result_to_proto(applied: ApplyResult) -> pb.ApplyServicesResponse:
    return pb.ApplyServicesResponse(
        **_rule_result_fields(applied.result),
        changes=[
            pb.FieldChange(path=change.path, before=change.before, after=change.after)
            for change in applied.changes
        ],
    )
