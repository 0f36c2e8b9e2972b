"""Each rule's span (one per rule, or per Service a request names): its name and what its
attributes say, the same for every RPC."""

from __future__ import annotations

from typing import Final

from opentelemetry.trace import Span, Status, StatusCode, Tracer

from server.domain.outcomes import Outcome, RuleOutcome

RULE_SPAN: Final = "k8sailor.rule"


def describe_rule_span(span: Span, index: int, result: RuleOutcome) -> None:
    """What became of the rule, as the rule span's attributes (names, not the caller's text:
    a rule can be long, and the result in the log has it)."""
    if not span.is_recording():
        return
    span.set_attributes(
        {
            "k8sailor.rule.index": index,
            "k8sailor.rule.outcome": result.outcome.value,
            "k8sailor.rule.reason": result.reason,
            "k8sailor.service.name": result.service_name,
            "k8sailor.service.type": result.service_type.value if result.service_type else "",
        }
    )
    if result.outcome is Outcome.FAILED:
        span.set_status(Status(StatusCode.ERROR, result.reason or "failed"))


def settled_span(tracer: Tracer | None, index: int, result: RuleOutcome) -> None:
    """The span of a rule settled without an API call (invalid, denied): started and ended at
    once, so that every rule has one. No tracer: tracing is off, and this costs nothing."""
    if tracer is not None:
        span = tracer.start_span(RULE_SPAN)
        describe_rule_span(span, index, result)
        span.end()
