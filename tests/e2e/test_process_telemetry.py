"""`k8sailor-server` as a pod runs it: JSON lines on stderr (not a terminal), /metrics on
--metrics-listen, and traces switched on by the OTEL_* environment alone."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import grpc

from k8sailor.v1 import exposure_pb2 as pb
from k8sailor.v1 import exposure_pb2_grpc as pb_grpc
from tests.conftest import Cluster
from tests.controlplane import free_port
from tests.metrics import delta, scrape
from tests.servers import wait_serving

SERVER = str(Path(sys.executable).parent / "k8sailor-server")
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


async def test_json_logs_metrics_and_traces_from_flags_and_environment(
    cluster: Cluster, namespace: str, deployment: dict[str, Any]
) -> None:
    target, metrics_port = f"127.0.0.1:{free_port()}", free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("K8SAILOR_", "OTEL_"))
    }
    # Spans to stdout: the exporter the SDK ships for a look, no collector needed.
    env |= {"KUBECONFIG": str(cluster.kubeconfig), "OTEL_TRACES_EXPORTER": "console"}
    process = await asyncio.create_subprocess_exec(
        SERVER, "--listen", target, "--metrics-listen", f"127.0.0.1:{metrics_port}",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await wait_serving(target, process, within=120)
        before = scrape(metrics_port)
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.ExposureServiceStub(channel)
            request = pb.CreateServicesRequest(
                namespace=namespace, deployment="web", rules=[pb.Rule(raw="80:8088")]
            )
            call = stub.CreateServices(request, metadata=(("traceparent", TRACEPARENT),))
            results = [result async for result in call]
        after = scrape(metrics_port)
        process.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0
    assert [result.outcome for result in results] == [pb.OUTCOME_CREATED]

    # Every line on stderr is one JSON object: start-up, configuration, the request, the drain.
    lines = [json.loads(line) for line in err.decode().splitlines()]
    assert all({"time", "level", "logger"} <= line.keys() for line in lines), lines
    events = [line.get("event") or line.get("message") for line in lines]
    assert "configuration" in events
    assert any(str(event).startswith("k8sailor serving") for event in events), events
    [request] = [line for line in lines if line.get("event") == "CreateServices"]
    assert request["trace_id"] == TRACE_ID
    assert request["outcomes"] == {"CREATED": 1}
    assert request["peer"].startswith("ipv4:127.0.0.1:")

    # The spans went to stdout (ConsoleSpanExporter) in the caller's trace.
    assert f'"trace_id": "0x{TRACE_ID}"' in out.decode()

    handled = {"grpc_type": "server_stream", "grpc_service": "k8sailor.v1.ExposureService"}
    handled |= {"grpc_method": "CreateServices", "grpc_code": "OK"}
    assert delta(before, after, "grpc_server_handled_total", **handled) == 1
    created = {"type": "ClusterIP", "outcome": "CREATED", "reason": ""}
    created["grpc_method"] = "CreateServices"
    assert delta(before, after, "k8sailor_rules_total", **created) == 1


async def test_an_otel_setting_k8sailor_cannot_honour_is_one_log_line_and_exit_2(
    cluster: Cluster,
) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env |= {"KUBECONFIG": str(cluster.kubeconfig), "OTEL_TRACES_EXPORTER": "zipkin"}
    process = await asyncio.create_subprocess_exec(
        SERVER, "--listen", "127.0.0.1:0", "--log-format", "json",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    [line] = [json.loads(text) for text in err.decode().splitlines()]
    assert line["level"] == "CRITICAL"
    assert line["message"] == (
        "k8sailor-server: OTEL_TRACES_EXPORTER: zipkin is not one of otlp, console, none"
    )
