"""What a Service read from the cluster says, for the lifecycle answers: its type, its ports,
and the rule it was made from (only when that still reads as one)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from server.domain.lifecycle_results import NOT_A_RULE, ExposedService
from server.domain.outcomes import Outcome, RuleResult
from server.domain.settings import Settings
from server.manifests import RULE_ANNOTATION
from server.rules import (
    MAX_RULE_LENGTH,
    PortRule,
    Protocol,
    RuleError,
    ServiceType,
    parse_rule,
)


def rule_of(service: Mapping[str, Any], settings: Settings) -> str:
    """The Service's rule, from its annotation, only if the annotation reads back as a
    canonical rule: anyone with patch rights on Services may set it to any text (up to
    256 KiB, escape sequences included), which would go into every answer. "" when the
    annotation is gone, NOT_A_RULE when it is something else."""
    text = _annotation(service)
    if not text:
        return ""
    if len(text) > MAX_RULE_LENGTH:
        return NOT_A_RULE
    try:
        rule = parse_rule(text, 0, settings.node_ports, settings.external_names)
    except RuleError:
        return NOT_A_RULE
    return text if rule.canonical() == text else NOT_A_RULE


def _annotation(service: Mapping[str, Any]) -> str:
    annotations = (service.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(RULE_ANNOTATION, ""))


def headless(service: Mapping[str, Any]) -> bool:
    return (service.get("spec") or {}).get("clusterIP") == "None"


def service_type(service: Mapping[str, Any]) -> ServiceType:
    spec = service.get("spec") or {}
    kind = spec.get("type") or "ClusterIP"
    if kind == "ClusterIP" and headless(service):
        return ServiceType.HEADLESS
    return ServiceType(kind)


def ports(service: Mapping[str, Any]) -> tuple[PortRule, ...]:
    return tuple(
        PortRule(
            port=int(port["port"]),
            target_port=port.get("targetPort", port["port"]),
            protocol=Protocol(port.get("protocol", "TCP")),
            node_port=port.get("nodePort"),
            app_protocol=port.get("appProtocol"),
            name=port.get("name"),
        )
        for port in (service.get("spec") or {}).get("ports") or ()
    )


def exposed(service: Mapping[str, Any], rule: str) -> ExposedService:
    return ExposedService(
        name=str(service["metadata"]["name"]),
        type=service_type(service),
        rule=rule,
        cluster_ip=str((service.get("spec") or {}).get("clusterIP") or ""),
        ports=ports(service),
    )


def rule_result(
    index: int,
    text: str,
    outcome: Outcome,
    service: Mapping[str, Any],
    type_: ServiceType | None,
) -> RuleResult:
    return RuleResult(
        index=index,
        rule=text,
        outcome=outcome,
        service_name=str(service["metadata"]["name"]),
        cluster_ip=str((service.get("spec") or {}).get("clusterIP") or ""),
        ports=ports(service),
        service_type=type_,
    )
