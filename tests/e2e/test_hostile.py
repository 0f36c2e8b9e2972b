"""Hostile requests through a real server and channel: refused cheaply, one result per rule,
never INTERNAL, and a health check still answers while the worst request is being handled."""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from k8sailor.v1 import exposure_pb2 as pb
from k8sailor.v1 import exposure_pb2_grpc as pb_grpc
from server.rules import MAX_PORTS, MAX_RULE_LENGTH
from tests.conftest import Cluster
from tests.controlplane import free_port
from tests.servers import wait_serving

SERVER = str(Path(sys.executable).parent / "k8sailor-server")


async def _call(
    target: str, request: pb.CreateServicesRequest
) -> tuple[list[pb.CreateServicesResponse], grpc.StatusCode, str]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.ExposureServiceStub(channel)
        results: list[pb.CreateServicesResponse] = []
        try:
            async for result in stub.CreateServices(request, timeout=120):
                results.append(result)
        except grpc.aio.AioRpcError as error:
            return results, error.code(), error.details() or ""
    return results, grpc.StatusCode.OK, ""


def _request(namespace: str, *rules: pb.Rule) -> pb.CreateServicesRequest:
    return pb.CreateServicesRequest(
        namespace=namespace, deployment="web", rules=list(rules), dry_run=True
    )


async def test_oversized_rules_are_refused_each_with_its_limit(
    target: str, namespace: str, deployment: dict[str, Any]
) -> None:
    too_long = pb.Rule(raw="8" * (MAX_RULE_LENGTH + 1))
    too_many = pb.Rule(raw=",".join(str(1000 + i) for i in range(MAX_PORTS + 1)))
    spec_ports = pb.Rule(
        spec=pb.ServiceSpec(
            type=pb.SERVICE_TYPE_CLUSTER_IP,
            ports=[pb.ServicePort(port=1000 + i) for i in range(MAX_PORTS + 1)],
        )
    )
    spec_bytes = pb.Rule(
        spec=pb.ServiceSpec(
            type=pb.SERVICE_TYPE_CLUSTER_IP,
            ports=[pb.ServicePort(port=80, app_protocol="x" * MAX_RULE_LENGTH)],
        )
    )
    fine = pb.Rule(raw="80")
    results, status, _ = await _call(
        target, _request(namespace, too_long, too_many, spec_ports, spec_bytes, fine)
    )
    assert status is grpc.StatusCode.OK
    by_index = {result.index: result for result in results}
    assert sorted(by_index) == [0, 1, 2, 3, 4]
    assert [by_index[i].outcome for i in range(4)] == [pb.OUTCOME_INVALID] * 4
    assert f"a rule may be at most {MAX_RULE_LENGTH} characters" in by_index[0].error
    assert len(by_index[0].rule) < 100
    assert f"a rule may have at most {MAX_PORTS} ports" in by_index[1].error
    assert f"a rule may have at most {MAX_PORTS} ports" in by_index[2].error
    assert f"a rule may be at most {MAX_RULE_LENGTH}" in by_index[3].error
    assert by_index[4].outcome == pb.OUTCOME_CREATED


async def test_a_request_beyond_the_message_limit_is_refused_by_grpc(
    target: str, namespace: str
) -> None:
    huge = _request(namespace, *[pb.Rule(raw="8" * 1000)] * 5000)
    _, status, _ = await _call(target, huge)
    assert status is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_huge_names_are_refused_in_a_short_message(target: str) -> None:
    request = pb.CreateServicesRequest(
        namespace="n" * 1_000_000, deployment="web", rules=[pb.Rule(raw="80")]
    )
    _, status, message = await _call(target, request)
    assert status is grpc.StatusCode.INVALID_ARGUMENT
    assert "(1000000 characters)" in message
    assert len(message) < 500


def _worst_rule(i: int) -> str:
    """A rule with every part the grammar allows: spaces, port names, protocols; MAX_PORTS
    ports, all valid, so every port is read, checked and built. Every rule is named "web", so
    that all but the first are refused after being built (dry run: the first creates nothing)."""
    ports = ",".join(f" {1000 + p} : {2000 + p} / udp ( p{i % 10}-{p} ) " for p in range(MAX_PORTS))
    return f"web={ports}"


async def test_health_answers_while_the_worst_request_is_handled(
    cluster: Cluster, namespace: str, deployment: dict[str, Any]
) -> None:
    rules = [pb.Rule(raw=_worst_rule(i)) for i in range(256)]
    request = _request(namespace, *rules)
    print(f"\nworst request: {len(rules)} rules of {MAX_PORTS} ports, {request.ByteSize():,} bytes")
    target = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("K8SAILOR_")}
    process = await asyncio.create_subprocess_exec(
        SERVER, "--listen", target, env={**env, "KUBECONFIG": str(cluster.kubeconfig)},
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await wait_serving(target, process, within=120)
        async with grpc.aio.insecure_channel(target) as channel:
            health = health_pb2_grpc.HealthStub(channel)

            async def check() -> float:
                started = time.perf_counter()
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=60)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
                return time.perf_counter() - started

            alone = [await check() for _ in range(20)]
            call = asyncio.create_task(_call(target, request))
            during: list[float] = []
            started = time.perf_counter()
            while not call.done():
                during.append(await check())
            took = time.perf_counter() - started
            results, status, message = await call
    finally:
        process.terminate()
        await process.wait()

    assert status is grpc.StatusCode.OK, message
    assert sorted(result.index for result in results) == list(range(256))
    assert results[0].outcome == pb.OUTCOME_CREATED or any(
        r.outcome == pb.OUTCOME_CREATED for r in results
    )
    refused = [r for r in results if r.outcome == pb.OUTCOME_INVALID]
    assert len(refused) == 255
    assert all('already makes a Service named "web"' in r.error for r in refused)
    # Health checks were answered while the request was being handled, not only after it.
    assert len(during) >= 2

    def ms(values: list[float]) -> str:
        return f"median {statistics.median(values) * 1e3:.1f} ms, max {max(values) * 1e3:.1f} ms"

    print(f"health alone: {ms(alone)}; during the {took:.2f} s request: {len(during)} checks, "
          f"{ms(during)}")  # fmt: skip
