"""The server and CLI as people run them: health, reflection, SIGTERM, and the CLI's output."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from client import Outcome, RequestFailed, Result, connect
from tests.conftest import Cluster
from tests.servers import server_process

BIN = Path(sys.executable).parent


async def test_health_answers_serving(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "k8sailor.v1.ExposureService"):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_and_describes_the_service(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="k8sailor.v1.ExposureService"
            ),
        ]
        replies = [reply async for reply in stub.ServerReflectionInfo(iter(requests))]
    names = {service.name for service in replies[0].list_services_response.service}
    assert {"k8sailor.v1.ExposureService", "grpc.health.v1.Health"} <= names
    (descriptor,) = replies[1].file_descriptor_response.file_descriptor_proto
    assert b"k8sailor/v1/exposure.proto" in descriptor


async def _run(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cli_prints_a_table_row_per_rule_and_exits_0(
    target: str, namespace: str, deployment: dict[str, Any]
) -> None:
    rules = ["80:8088", "#80:80", "!31234:80:8088", "@www.example.com"]
    code, out, err = await _run(
        str(BIN / "k8sailor"), "expose", "web", *rules, "-n", namespace, "--server", target
    )
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split() == ["INDEX", "OUTCOME", "SERVICE", "CLUSTER-IP", "PORTS", "ERROR"]
    assert len(rows) == 4
    by_index = {row.split()[0]: row.split() for row in rows}
    assert by_index["0"][1:3] == ["CREATED", "web"]
    assert by_index["1"][3] == "None"
    assert by_index["2"][4] == "31234:80:8088/TCP"
    assert by_index["3"][1:4] == ["CREATED", "web-external", "-"]


async def test_cli_json_lines_and_exit_1_when_a_rule_fails(
    target: str, namespace: str, deployment: dict[str, Any]
) -> None:
    code, out, _ = await _run(
        str(BIN / "k8sailor"), "expose", "web", "80", "!99999:80:8088",
        "-n", namespace, "--server", target, "--json",
    )  # fmt: skip
    assert code == 1
    lines = [json.loads(line) for line in out.splitlines()]
    by_index = {line["index"]: line for line in lines}
    assert by_index[0]["outcome"] == "CREATED"
    assert by_index[0]["ports"][0]["port"] == 80
    assert by_index[1]["outcome"] == "INVALID"
    assert "node port 99999 is outside 30000-32767" in by_index[1]["error"]


async def test_cli_exits_2_with_a_message_when_the_request_fails(
    target: str, namespace: str
) -> None:
    code, _, err = await _run(
        str(BIN / "k8sailor"), "expose", "nope", "80", "-n", namespace, "--server", target
    )
    assert code == 2
    assert 'NOT_FOUND: Deployment "nope" not found' in err
    assert "Traceback" not in err


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
async def test_sigterm_lets_the_request_in_flight_finish_and_exits_0(
    cluster: Cluster, namespace: str, deployment: dict[str, Any], tmp_path: Path, event_loop: str
) -> None:
    flags = ["--max-concurrency", "1", "--grace", "30", "--event-loop", event_loop]
    async with server_process(cluster.kubeconfig, tmp_path, flags) as server:
        process, target = server.process, server.target
        rules = [f"svc-{i}=80" for i in range(120)]
        async with connect(target) as c:
            results: list[Result] = []
            async for result in c.create_services("web", rules, namespace=namespace):
                if not results:
                    process.send_signal(signal.SIGTERM)
                    await asyncio.sleep(0.2)
                    # Draining: new requests are refused while this one goes on.
                    try:
                        _ = [
                            r async for r in c.create_services("web", ["x=81"], namespace=namespace)
                        ]
                        refused = False
                    except RequestFailed as error:
                        refused = error.code is grpc.StatusCode.UNAVAILABLE
                    assert refused, "a new request was accepted while draining"
                results.append(result)
        assert sorted(result.index for result in results) == list(range(120))
        assert all(result.outcome is Outcome.CREATED for result in results)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    log = server.log.read_text()
    assert "draining" in log
    # stderr is not a terminal: every line is a JSON object.
    lines = [json.loads(line) for line in log.splitlines()]
    [configuration] = [line for line in lines if line.get("event") == "configuration"]
    assert configuration["event_loop"] == event_loop
    [logged] = [line for line in lines if line.get("event") == "CreateServices"]
    assert logged["outcomes"] == {"CREATED": 120}
