"""What a Service read from the cluster says to the lifecycle answers: the rule it was made
from (only when that still reads as one), and the results built from it. What the Service's
body holds is read by server.kube.services."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from server.domain.lifecycle_results import NOT_A_RULE, ExposedService
from server.domain.outcomes import Outcome, RuleResult
from server.domain.settings import Settings
from server.kube.services import cluster_ip, name_of, ports, rule_annotation, service_type
from server.rules import MAX_RULE_LENGTH, RuleError, ServiceType, parse_rule


def rule_of(service: Mapping[str, Any], settings: Settings) -> str:
    """The Service's rule, from its annotation, only if the annotation reads back as a
    canonical rule: anyone with patch rights on Services may set it to any text (up to
    256 KiB, escape sequences included), which would go into every answer. "" when the
    annotation is gone, NOT_A_RULE when it is something else."""
    text = rule_annotation(service)
    if not text:
        return ""
    if len(text) > MAX_RULE_LENGTH:
        return NOT_A_RULE
    try:
        rule = parse_rule(text, 0, settings.node_ports, settings.external_names)
    except RuleError:
        return NOT_A_RULE
    return text if rule.canonical() == text else NOT_A_RULE


def exposed(service: Mapping[str, Any], rule: str) -> ExposedService:
    return ExposedService(
        name=name_of(service),
        type=service_type(service),
        rule=rule,
        cluster_ip=cluster_ip(service),
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
        service_name=name_of(service),
        cluster_ip=cluster_ip(service),
        ports=ports(service),
        service_type=type_,
    )
