"""Metrics, traces and the request log line, seen from outside: a real server with /metrics on
a free port, a real channel, the real API server, and spans in the SDK's in-memory exporter."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kubernetes_asyncio import client, config
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from k8sailor.v1 import exposure_pb2 as pb
from k8sailor.v1 import exposure_pb2_grpc as pb_grpc
from server.app import RunningServer, ServerConfig, serving
from server.observability.logs import Fields
from tests.conftest import Cluster
from tests.metrics import delta, scrape, total_delta

SERVICE = "k8sailor.v1.ExposureService"
CREATE = (("grpc_method", "CreateServices"), ("grpc_service", SERVICE))
STREAM = (("grpc_type", "server_stream"),)
# The two rules that become Services, and one that the parser refuses.
RULES = ["80:8088", "#80:80", "80:99999"]


def grpc_labels(*extra: tuple[str, str]) -> dict[str, str]:
    return dict((*CREATE, *STREAM, *extra))


async def create(
    stub: pb_grpc.ExposureServiceAsyncStub,
    namespace: str,
    deployment: str,
    rules: list[str],
    metadata: tuple[tuple[str, str], ...] = (),
) -> tuple[grpc.StatusCode, list[pb.CreateServicesResponse]]:
    request = pb.CreateServicesRequest(
        namespace=namespace, deployment=deployment, rules=[pb.Rule(raw=rule) for rule in rules]
    )
    call = stub.CreateServices(request, metadata=metadata)
    responses: list[pb.CreateServicesResponse] = []
    try:
        async for response in call:
            responses.append(response)
    except grpc.aio.AioRpcError as error:
        return error.code(), responses
    return await call.code(), responses


@asynccontextmanager
async def observed_server(
    api: client.ApiClient, tracer_provider: TracerProvider | None = None, metrics: bool = True
) -> AsyncIterator[tuple[RunningServer, pb_grpc.ExposureServiceAsyncStub, grpc.aio.Channel]]:
    server_config = ServerConfig(
        listen="127.0.0.1:0",
        metrics_listen="127.0.0.1:0" if metrics else "",
        # A GET per request, so that each request's Deployment read is a call and a span here.
        deployment_cache="off",
    )
    async with (
        serving(api, server_config, tracer_provider=tracer_provider) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        yield running, pb_grpc.ExposureServiceStub(channel), channel


async def test_metrics_count_rpcs_rules_and_api_calls_by_outcome(
    api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    async with observed_server(api_client) as (running, stub, channel):
        port = running.telemetry.metrics_port
        assert port is not None
        before = scrape(port)

        first = await create(stub, namespace, "web", RULES)
        again = await create(stub, namespace, "web", RULES)
        missing = await create(stub, namespace, "no-such-deployment", RULES)
        empty = await create(stub, namespace, "web", [])
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())

        after = scrape(port)

    assert [code for code, _ in (first, again, missing, empty)] == [
        grpc.StatusCode.OK,
        grpc.StatusCode.OK,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
    ]
    outcomes = [sorted(r.outcome for r in responses) for _, responses in (first, again)]
    assert outcomes == [
        sorted([pb.OUTCOME_CREATED, pb.OUTCOME_CREATED, pb.OUTCOME_INVALID]),
        sorted([pb.OUTCOME_UNCHANGED, pb.OUTCOME_UNCHANGED, pb.OUTCOME_INVALID]),
    ]

    # gRPC, as go-grpc-prometheus names it.
    assert delta(before, after, "grpc_server_started_total", **grpc_labels()) == 4
    assert delta(before, after, "grpc_server_msg_received_total", **grpc_labels()) == 4
    assert delta(before, after, "grpc_server_msg_sent_total", **grpc_labels()) == 6
    for code, count in (("OK", 2), ("NotFound", 1), ("InvalidArgument", 1)):
        handled = delta(
            before, after, "grpc_server_handled_total", **grpc_labels(("grpc_code", code))
        )
        assert handled == count, code
    assert delta(before, after, "grpc_server_handling_seconds_count", **grpc_labels()) == 4
    assert (
        delta(before, after, "grpc_server_handling_seconds_bucket", **grpc_labels(("le", "+Inf")))
        == 4
    )
    health = {"grpc_type": "unary", "grpc_service": "grpc.health.v1.Health", "grpc_method": "Check"}
    assert delta(before, after, "grpc_server_handled_total", grpc_code="OK", **health) == 1
    assert delta(before, after, "grpc_server_msg_sent_total", **health) == 1

    # Rules, by type, outcome and reason.
    rules = {
        ("ClusterIP", "CREATED", ""): 1,
        ("Headless", "CREATED", ""): 1,
        ("ClusterIP", "UNCHANGED", ""): 1,
        ("Headless", "UNCHANGED", ""): 1,
        ("Unknown", "INVALID", "RuleInvalid"): 2,
    }
    for (type_, outcome, reason), count in rules.items():
        labels = {"type": type_, "outcome": outcome, "reason": reason}
        counted = delta(
            before, after, "k8sailor_rules_total", grpc_method="CreateServices", **labels
        )
        assert counted == count, (type_, outcome, reason)
    counted_rules = total_delta(before, after, "k8sailor_rules_total")
    assert counted_rules == 6

    # Every API call, by verb, resource and status: the Deployment read (twice found, once
    # 404), the Services created (201) and, sent again, refused (409) then read (200).
    calls = {
        ("get", "deployments", "200"): 2,
        ("get", "deployments", "404"): 1,
        ("create", "services", "201"): 2,
        ("create", "services", "409"): 2,
        ("get", "services", "200"): 2,
    }
    for (verb, resource, code), count in calls.items():
        counted = delta(
            before, after, "k8sailor_kube_requests_total", verb=verb, resource=resource, code=code
        )
        assert counted == count, (verb, resource, code)
    assert total_delta(before, after, "k8sailor_kube_requests_total") == 9
    # One histogram observation per call.
    for verb, resource, count in (("get", "deployments", 3), ("create", "services", 4)):
        observed = delta(
            before,
            after,
            "k8sailor_kube_request_duration_seconds_count",
            verb=verb,
            resource=resource,
        )
        assert observed == count, (verb, resource)
    assert after[("k8sailor_kube_in_flight", ())] == 0
    assert 1 <= after[("k8sailor_kube_concurrency_limit", ())] <= 32

    # The process and Python metrics prometheus_client collects by itself.
    assert ("python_info", ()) not in after  # it has labels; the family is there:
    assert any(name == "python_info" for name, _ in after)
    assert any(name == "process_cpu_seconds_total" for name, _ in after)


async def test_no_metrics_endpoint_and_no_interceptors_unless_asked(
    api_client: client.ApiClient,
) -> None:
    async with observed_server(api_client, metrics=False) as (running, _, _):
        assert running.telemetry.metrics_port is None
        assert running.telemetry.interceptors == ()
        assert running.telemetry.tracer is None


@pytest.fixture
async def own_api_client(cluster: Cluster) -> AsyncIterator[client.ApiClient]:
    """An ApiClient of the test's own: tracing adds its trace config to the client's session."""
    api = await config.new_client_from_config(config_file=str(cluster.kubeconfig))
    async with api:
        yield api


CALLER_TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
CALLER_SPAN_ID = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{CALLER_TRACE_ID:032x}-{CALLER_SPAN_ID:016x}-01"


async def test_a_request_with_traceparent_makes_one_trace_with_rule_and_api_call_spans(
    own_api_client: client.ApiClient,
    namespace: str,
    deployment: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    caplog.set_level(logging.INFO, logger="k8sailor.requests")

    async with observed_server(own_api_client, provider, metrics=False) as (_, stub, channel):
        code, responses = await create(
            stub, namespace, "web", RULES, metadata=(("traceparent", TRACEPARENT),)
        )
        # Health checks are probes, not requests: not traced.
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert code is grpc.StatusCode.OK
    spans = exporter.get_finished_spans()

    assert {span.context.trace_id for span in spans} == {CALLER_TRACE_ID}
    [server] = [span for span in spans if span.kind is SpanKind.SERVER]
    assert server.name == f"/{SERVICE}/CreateServices"
    assert server.parent is not None
    assert server.parent.span_id == CALLER_SPAN_ID
    assert server.parent.is_remote

    def children(parent: ReadableSpan) -> list[ReadableSpan]:
        return [s for s in spans if s.parent and s.parent.span_id == parent.context.span_id]

    rule_spans = sorted(
        (span for span in children(server) if span.name == "k8sailor.rule"),
        key=lambda span: int(span.attributes["k8sailor.rule.index"]),  # type: ignore[arg-type,index]
    )
    attributes = [
        {
            key: span.attributes[key]  # type: ignore[index]
            for key in ("k8sailor.rule.index", "k8sailor.rule.outcome", "k8sailor.service.type")
        }
        for span in rule_spans
    ]
    assert attributes == [
        {
            "k8sailor.rule.index": 0,
            "k8sailor.rule.outcome": "CREATED",
            "k8sailor.service.type": "ClusterIP",
        },
        {
            "k8sailor.rule.index": 1,
            "k8sailor.rule.outcome": "CREATED",
            "k8sailor.service.type": "Headless",
        },
        {"k8sailor.rule.index": 2, "k8sailor.rule.outcome": "INVALID", "k8sailor.service.type": ""},
    ]
    by_index = {response.index: response for response in responses}
    for span in rule_spans[:2]:
        index = int(span.attributes["k8sailor.rule.index"])  # type: ignore[arg-type,index]
        assert span.attributes["k8sailor.service.name"] == by_index[index].service_name  # type: ignore[index]

    # One CLIENT span per API call: the Deployment read under the request, each Service's
    # create under its rule; the refused rule made none.
    [read] = [span for span in children(server) if span.kind is SpanKind.CLIENT]
    assert read.name == "GET"
    assert [span.name for span in children(rule_spans[0])] == ["POST"]
    assert [span.name for span in children(rule_spans[1])] == ["POST"]
    assert children(rule_spans[2]) == []
    assert len(spans) == 1 + 3 + 3

    # The request's log line names the trace and the server span, and the peer.
    [record] = [r for r in caplog.records if isinstance(r.msg, Fields)]
    assert isinstance(record.msg, Fields)
    line = dict(record.msg)
    assert line["trace_id"] == f"{CALLER_TRACE_ID:032x}"
    assert line["span_id"] == f"{server.context.span_id:016x}"
    assert line["peer"].startswith("ipv4:127.0.0.1:")
    assert line["event"] == "CreateServices"
    assert line["outcomes"] == {"CREATED": 2, "INVALID": 1}


async def test_lifecycle_calls_are_counted_traced_and_logged_like_create(
    own_api_client: client.ApiClient,
    namespace: str,
    deployment: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    caplog.set_level(logging.INFO, logger="k8sailor.requests")
    apply = pb.ApplyServicesRequest(
        namespace=namespace, deployment="web", rules=[pb.Rule(raw=rule) for rule in RULES[:2]]
    )
    metadata = (("traceparent", TRACEPARENT),)

    async with observed_server(own_api_client, provider) as (running, stub, _):
        port = running.telemetry.metrics_port
        assert port is not None
        before = scrape(port)
        applied = [response async for response in stub.ApplyServices(apply, metadata=metadata)]
        listed = await stub.ListServices(
            pb.ListServicesRequest(namespace=namespace, deployment="web"), metadata=metadata
        )
        after = scrape(port)

    assert len(applied) == 2
    assert len(listed.services) == 2
    apply_labels = {"grpc_type": "server_stream", "grpc_service": SERVICE}
    apply_labels["grpc_method"] = "ApplyServices"
    assert delta(before, after, "grpc_server_handled_total", grpc_code="OK", **apply_labels) == 1
    assert delta(before, after, "grpc_server_msg_sent_total", **apply_labels) == 2
    list_labels = {"grpc_type": "unary", "grpc_service": SERVICE, "grpc_method": "ListServices"}
    assert delta(before, after, "grpc_server_handled_total", grpc_code="OK", **list_labels) == 1
    assert delta(before, after, "grpc_server_msg_sent_total", **list_labels) == 1

    servers = {
        span.name: span for span in exporter.get_finished_spans() if span.kind is SpanKind.SERVER
    }
    assert set(servers) == {f"/{SERVICE}/ApplyServices", f"/{SERVICE}/ListServices"}
    assert {span.context.trace_id for span in servers.values()} == {CALLER_TRACE_ID}
    lines = {
        record.msg["event"]: record.msg
        for record in caplog.records
        if isinstance(record.msg, Fields)
    }
    assert set(lines) == {"ApplyServices", "ListServices"}
    for event, line in lines.items():
        assert line["trace_id"] == f"{CALLER_TRACE_ID:032x}"
        assert line["span_id"] == f"{servers[f'/{SERVICE}/{event}'].context.span_id:016x}"
        assert line["peer"].startswith("ipv4:127.0.0.1:")


async def test_the_deployment_cache_counts_its_hits_and_misses(
    api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    config = ServerConfig(
        listen="127.0.0.1:0", metrics_listen="127.0.0.1:0", deployment_cache="watch"
    )
    async with (
        serving(api_client, config) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        assert running.deployments is not None
        assert running.telemetry.metrics_port is not None
        await running.deployments.wait_synced()
        stub = pb_grpc.ExposureServiceStub(channel)
        before = scrape(running.telemetry.metrics_port)
        found = await create(stub, namespace, "web", ["80:8088"])
        missing = await create(stub, namespace, "no-such-deployment", ["80:8088"])
        after = scrape(running.telemetry.metrics_port)

    assert (found[0], missing[0]) == (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND)
    assert delta(before, after, "k8sailor_deployment_cache_hits_total") == 1
    # Not in the cache: read from the API server (404), which the cache does not trust alone.
    assert delta(before, after, "k8sailor_deployment_cache_misses_total") == 1
    get = {"verb": "get", "resource": "deployments"}
    assert delta(before, after, "k8sailor_kube_requests_total", code="404", **get) == 1
    assert delta(before, after, "k8sailor_kube_requests_total", code="200", **get) == 0
    assert delta(before, after, "k8sailor_deployment_cache_relists_total") == 0
