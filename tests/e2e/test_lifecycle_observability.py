"""ApplyServices and DeleteServices, seen from outside as CreateServices is in
test_observability: their rules counted in /metrics (read by prometheus_client's parser), and a
span per rule or Service under the server span, with the API calls it made under it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from kubernetes_asyncio import client, config
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from k8sailor.v1 import exposure_pb2 as pb
from k8sailor.v1 import exposure_pb2_grpc as pb_grpc
from tests.conftest import Cluster
from tests.e2e.test_lifecycle import foreign_service
from tests.e2e.test_observability import observed_server
from tests.metrics import delta, scrape, total_delta

SERVICE = "k8sailor.v1.ExposureService"
CALLER_TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
CALLER_SPAN_ID = 0xB7AD6B7169203331
TRACEPARENT = f"00-{CALLER_TRACE_ID:032x}-{CALLER_SPAN_ID:016x}-01"


async def apply(
    stub: pb_grpc.ExposureServiceAsyncStub,
    namespace: str,
    rules: list[str],
    metadata: tuple[tuple[str, str], ...] = (),
    **options: bool,
) -> list[pb.ApplyServicesResponse]:
    request = pb.ApplyServicesRequest(
        namespace=namespace,
        deployment="web",
        rules=[pb.Rule(raw=rule) for rule in rules],
        **options,
    )
    return [response async for response in stub.ApplyServices(request, metadata=metadata)]


async def delete(
    stub: pb_grpc.ExposureServiceAsyncStub,
    namespace: str,
    names: list[str],
    metadata: tuple[tuple[str, str], ...] = (),
    **options: bool,
) -> list[pb.DeleteServicesResponse]:
    request = pb.DeleteServicesRequest(
        namespace=namespace, deployment="web", names=names, **options
    )
    return [response async for response in stub.DeleteServices(request, metadata=metadata)]


def outcomes(responses: list[Any]) -> dict[str, str]:
    return {r.service_name or r.rule: pb.Outcome.Name(r.outcome) for r in responses}


async def test_apply_and_delete_count_their_rules_by_type_outcome_reason_and_method(
    api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    await foreign_service(api_client, namespace, "not-ours")
    async with observed_server(api_client) as (running, stub, _):
        port = running.telemetry.metrics_port
        assert port is not None
        before = scrape(port)
        first = await apply(stub, namespace, ["80:8088", "#80:80", "80:99999"])
        second = await apply(stub, namespace, ["80:9090", "#80:80", "!80:8088"], prune=False)
        pruned = await apply(stub, namespace, ["80:9090"], prune=True)
        named = await delete(stub, namespace, ["web", "not-ours", "nothing-here"])
        everything = await delete(stub, namespace, [], all=True)
        after = scrape(port)

    assert outcomes(first) == {
        "web": "OUTCOME_CREATED",
        "web-headless": "OUTCOME_CREATED",
        "80:99999": "OUTCOME_INVALID",
    }
    assert outcomes(second) == {
        "web": "OUTCOME_UPDATED",
        "web-headless": "OUTCOME_UNCHANGED",
        "web-nodeport": "OUTCOME_CREATED",
    }
    assert outcomes(pruned) == {
        "web": "OUTCOME_UNCHANGED",
        "web-headless": "OUTCOME_DELETED",
        "web-nodeport": "OUTCOME_DELETED",
    }
    assert outcomes(named) == {
        "web": "OUTCOME_DELETED",
        "not-ours": "OUTCOME_NOT_FOUND",  # as a missing one: not the caller's to learn
        "nothing-here": "OUTCOME_NOT_FOUND",
    }
    assert outcomes(everything) == {}

    counts = {
        # type, outcome, reason, grpc_method
        ("ClusterIP", "CREATED", "", "ApplyServices"): 1,
        ("Headless", "CREATED", "", "ApplyServices"): 1,
        ("Unknown", "INVALID", "RuleInvalid", "ApplyServices"): 1,
        ("ClusterIP", "UPDATED", "", "ApplyServices"): 1,
        ("Headless", "UNCHANGED", "", "ApplyServices"): 1,
        ("NodePort", "CREATED", "", "ApplyServices"): 1,
        ("ClusterIP", "UNCHANGED", "", "ApplyServices"): 1,
        # pruned: the type of the Service that was there
        ("Headless", "DELETED", "", "ApplyServices"): 1,
        ("NodePort", "DELETED", "", "ApplyServices"): 1,
        ("ClusterIP", "DELETED", "", "DeleteServices"): 1,
        ("Unknown", "NOT_FOUND", "NotFound", "DeleteServices"): 2,
    }
    for (type_, outcome, reason, method), count in counts.items():
        labels = {"type": type_, "outcome": outcome, "reason": reason, "grpc_method": method}
        assert delta(before, after, "k8sailor_rules_total", **labels) == count, labels
    assert total_delta(before, after, "k8sailor_rules_total") == sum(counts.values())


@pytest.fixture
async def own_api_client(cluster: Cluster) -> AsyncIterator[client.ApiClient]:
    """An ApiClient of the test's own: tracing adds its trace config to the client's session."""
    api = await config.new_client_from_config(config_file=str(cluster.kubeconfig))
    async with api:
        yield api


class Tree:
    def __init__(self, spans: list[ReadableSpan]) -> None:
        self.spans = spans

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        return sorted(
            (s for s in self.spans if s.parent and s.parent.span_id == parent.context.span_id),
            key=lambda s: s.start_time or 0,
        )

    def server(self, method: str) -> ReadableSpan:
        [server] = [
            span
            for span in self.spans
            if span.kind is SpanKind.SERVER and span.name == f"/{SERVICE}/{method}"
        ]
        return server

    def rules(self, parent: ReadableSpan) -> dict[str, ReadableSpan]:
        """The rule spans under parent, by Service name."""
        rules = [span for span in self.children(parent) if span.name == "k8sailor.rule"]
        return {str(span.attributes["k8sailor.service.name"]): span for span in rules}  # type: ignore[index]


def described(span: ReadableSpan) -> tuple[object, ...]:
    attributes = span.attributes or {}
    return tuple(
        attributes[key]
        for key in (
            "k8sailor.rule.index",
            "k8sailor.rule.outcome",
            "k8sailor.rule.reason",
            "k8sailor.service.type",
        )
    )


async def test_apply_and_delete_make_a_span_per_rule_with_its_api_calls_under_it(
    own_api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    metadata = (("traceparent", TRACEPARENT),)

    async with observed_server(own_api_client, provider, metrics=False) as (_, stub, _):
        applied = await apply(stub, namespace, ["80:8088", "80:99999"], metadata)
        deleted = await delete(stub, namespace, ["web", "nothing-here"], metadata)
    assert outcomes(applied) == {"web": "OUTCOME_CREATED", "80:99999": "OUTCOME_INVALID"}
    assert outcomes(deleted) == {"web": "OUTCOME_DELETED", "nothing-here": "OUTCOME_NOT_FOUND"}
    tree = Tree(list(exporter.get_finished_spans()))
    assert {span.context.trace_id for span in tree.spans} == {CALLER_TRACE_ID}

    # ApplyServices: the Deployment read under the call; under the valid rule's span its
    # Service's read (404: not there yet), its create (a POST, which cannot adopt a Service
    # made since the read) and the move of its fields to k8sailor's apply (a PATCH); under the
    # invalid rule's span, nothing.
    server = tree.server("ApplyServices")
    assert server.parent is not None
    assert server.parent.span_id == CALLER_SPAN_ID
    assert [s.name for s in tree.children(server) if s.kind is SpanKind.CLIENT] == ["GET"]
    rules = tree.rules(server)
    assert set(rules) == {"web", ""}
    assert described(rules["web"]) == (0, "CREATED", "", "ClusterIP")
    assert described(rules[""]) == (1, "INVALID", "RuleInvalid", "")
    assert [s.name for s in tree.children(rules["web"])] == ["GET", "POST", "PATCH"]
    assert tree.children(rules[""]) == []

    # DeleteServices: a span per name, its index the name's position; each reads its Service,
    # and the one that is there is deleted.
    server = tree.server("DeleteServices")
    assert [s.name for s in tree.children(server) if s.kind is SpanKind.CLIENT] == ["GET"]
    rules = tree.rules(server)
    assert set(rules) == {"web", "nothing-here"}
    assert described(rules["web"]) == (0, "DELETED", "", "ClusterIP")
    assert described(rules["nothing-here"]) == (1, "NOT_FOUND", "NotFound", "")
    assert [s.name for s in tree.children(rules["web"])] == ["GET", "DELETE"]
    assert [s.name for s in tree.children(rules["nothing-here"])] == ["GET"]
    # Only a FAILED rule is an error: NOT_FOUND is an answer (its GET, a 404, is the
    # instrumentation's error, not the rule's).
    rule_spans = [s for s in tree.spans if s.name == "k8sailor.rule"]
    assert all(s.status.status_code is StatusCode.UNSET for s in rule_spans)

    # Nothing else: two server spans, their Deployment reads, four rule spans, six calls.
    assert len(tree.spans) == 2 + 2 + 4 + 6


async def test_a_call_that_fails_as_a_whole_makes_no_rule_spans(
    own_api_client: client.ApiClient, namespace: str
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with observed_server(own_api_client, provider, metrics=False) as (_, stub, _):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await delete(stub, namespace, ["web"])
    assert refused.value.code() is grpc.StatusCode.NOT_FOUND
    spans = exporter.get_finished_spans()
    assert [span.name for span in spans if span.name == "k8sailor.rule"] == []
