"""Each rule's span (one per rule, or per Service a request names): its name and what its
attributes say, the same for every RPC."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar, overload

from opentelemetry.trace import NoOpTracer, Span, Status, StatusCode, Tracer

from server.domain.outcomes import Outcome, RuleOutcome

RULE_SPAN: Final = "k8sailor.rule"
# The tracer of a flow given none: tracing is off. Its spans record nothing (describe_rule_span
# then sets nothing), so the flows have one code path whether tracing is on or off.
NO_TRACING: Final[Tracer] = NoOpTracer()

OutcomeT = TypeVar("OutcomeT", bound=RuleOutcome)
T = TypeVar("T")


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


@overload
async def in_rule_span(tracer: Tracer, index: int, job: Awaitable[OutcomeT]) -> OutcomeT: ...


@overload
async def in_rule_span(
    tracer: Tracer, index: int, job: Awaitable[T], outcome: Callable[[T], RuleOutcome]
) -> T: ...


async def in_rule_span(
    tracer: Tracer,
    index: int,
    job: Awaitable[Any],
    outcome: Callable[[Any], RuleOutcome] | None = None,
) -> Any:
    """job, run inside a rule span of its own (the API calls it makes are its children), which
    ends with what became of the rule as attributes: the job's result, or what outcome reads of
    it (a result that carries more than the rule's outcome)."""
    if tracer is NO_TRACING:
        # Tracing off: no span to describe, and the no-op span's context attach and detach
        # cost 4.6 us a rule (a tenth of the 1-rule requests' gap with dad7cb3, which made
        # no span work when tracing was off).
        return await job
    with tracer.start_as_current_span(RULE_SPAN) as span:
        result = await job
        describe_rule_span(span, index, result if outcome is None else outcome(result))
    return result


def settled_span(tracer: Tracer, index: int, result: RuleOutcome) -> None:
    """The span of a rule settled without an API call (invalid, denied): started and ended at
    once, so that every rule has one."""
    if tracer is NO_TRACING:
        return
    span = tracer.start_span(RULE_SPAN)
    describe_rule_span(span, index, result)
    span.end()
