"""What tracing leaves out: API calls made outside a sampled span (the Deployment cache's list
and watch, the calls of a request the caller did not sample) make no spans at all."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from kubernetes_asyncio import client, config
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from k8sailor.v1 import exposure_pb2_grpc as pb_grpc
from server.app import ServerConfig, serving
from tests.conftest import Cluster
from tests.e2e.test_observability import create

TRACE_ID = 0x5BF92F3577B34DA6A3CE929D0E0E4736
SPAN_ID = 0x10F067AA0BA902B7


def traceparent(sampled: bool) -> tuple[tuple[str, str], ...]:
    return (("traceparent", f"00-{TRACE_ID:032x}-{SPAN_ID:016x}-{'01' if sampled else '00'}"),)


@pytest.fixture
async def own_api_client(cluster: Cluster) -> AsyncIterator[client.ApiClient]:
    api = await config.new_client_from_config(config_file=str(cluster.kubeconfig))
    async with api:
        yield api


async def test_only_sampled_requests_make_spans_and_the_cache_makes_none(
    own_api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    server_config = ServerConfig(listen="127.0.0.1:0", deployment_cache="watch")
    async with (
        serving(own_api_client, server_config, tracer_provider=provider) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        assert running.deployments is not None
        await running.deployments.wait_synced()
        stub = pb_grpc.ExposureServiceStub(channel)
        # A Deployment the cache cannot answer for: read with a GET, under an unsampled span.
        missing = await create(stub, namespace, "not-there", ["80:8088"], traceparent(False))
        unsampled = await create(stub, namespace, "web", ["80:8088"], traceparent(False))
        # The cache's list and watch, and the two requests, made no spans.
        assert exporter.get_finished_spans() == ()
        sampled = await create(stub, namespace, "web", ["#80:8088"], traceparent(True))
    assert [code for code, _ in (missing, unsampled, sampled)] == [
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.OK,
        grpc.StatusCode.OK,
    ]

    spans = exporter.get_finished_spans()
    assert {span.context.trace_id for span in spans} == {TRACE_ID}
    # The server span, the rule, and its Service's create: the Deployment came from the cache.
    assert sorted((span.kind.name, span.name) for span in spans) == [
        (SpanKind.CLIENT.name, "POST"),
        (SpanKind.INTERNAL.name, "k8sailor.rule"),
        (SpanKind.SERVER.name, "/k8sailor.v1.ExposureService/CreateServices"),
    ]
