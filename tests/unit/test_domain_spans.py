"""The rule span every flow runs its rules (or Services) in: server.domain.spans.in_rule_span."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from server.domain.lifecycle_results import ApplyResult
from server.domain.outcomes import Outcome, RuleResult
from server.domain.spans import NO_TRACING, RULE_SPAN, in_rule_span
from server.rules import ServiceType

CREATED = RuleResult(2, "80:8088", Outcome.CREATED, "web", service_type=ServiceType.CLUSTER_IP)


def recording() -> tuple[trace.Tracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter


async def done(result: RuleResult, seen: list[bool] | None = None) -> RuleResult:
    if seen is not None:  # the job's API calls are the span's children: it is current
        seen.append(trace.get_current_span().is_recording())
    return result


async def test_the_span_is_named_and_tells_the_outcome() -> None:
    tracer, exporter = recording()
    seen: list[bool] = []
    assert await in_rule_span(tracer, 2, done(CREATED, seen)) == CREATED
    [span] = exporter.get_finished_spans()
    assert (span.name, seen) == (RULE_SPAN, [True])
    assert dict(span.attributes or {}) == {
        "k8sailor.rule.index": 2,
        "k8sailor.rule.outcome": "CREATED",
        "k8sailor.rule.reason": "",
        "k8sailor.service.name": "web",
        "k8sailor.service.type": "ClusterIP",
    }


async def test_a_result_that_carries_more_is_described_by_its_outcome() -> None:
    tracer, exporter = recording()
    failed = RuleResult(0, "80:8088", Outcome.FAILED, "web", reason="Timeout")

    async def applied() -> ApplyResult:
        return ApplyResult(failed)

    result = await in_rule_span(tracer, 0, applied(), lambda each: each.result)
    assert result == ApplyResult(failed)
    [span] = exporter.get_finished_spans()
    assert dict(span.attributes or {})["k8sailor.rule.outcome"] == "FAILED"
    assert span.status.description == "Timeout"


async def test_tracing_off_is_the_no_op_tracer_and_the_same_result() -> None:
    assert await in_rule_span(NO_TRACING, 2, done(CREATED)) == CREATED


async def test_a_failing_job_raises_through_the_span() -> None:
    tracer, exporter = recording()

    async def boom() -> RuleResult:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        await in_rule_span(tracer, 1, boom())
    [span] = exporter.get_finished_spans()
    assert span.name == RULE_SPAN
