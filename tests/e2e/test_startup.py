"""Starting and stopping the server as people do it, wrongly included: one line and exit 2 for
bad configuration, a busy port is an error, and a second signal ends the drain at once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kubernetes_asyncio import client

from client import connect
from server.app import ListenError, ServerConfig, serving
from tests.conftest import Cluster
from tests.controlplane import free_port
from tests.servers import wait_serving

SERVER = str(Path(sys.executable).parent / "k8sailor-server")


async def _server(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        SERVER, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("K8SAILOR_")}
    return {**env, **extra}


async def test_help_works_with_a_bad_environment_value() -> None:
    code, out, err = await _server("--help", env=_clean_env(K8SAILOR_MAX_CONCURRENCY="abc"))
    assert code == 0, err
    assert "K8SAILOR_MAX_CONCURRENCY" in out


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        ([], {"K8SAILOR_MAX_CONCURRENCY": "abc"}, "K8SAILOR_MAX_CONCURRENCY: 'abc' is not a whole"),
        (["--log-level", "verbose"], {}, "--log-level: 'VERBOSE' is not one of"),
        (["--listen", "nowhere"], {}, "--listen: 'nowhere' is not HOST:PORT"),
        (["--kubeconfig", "/nonexistent/kubeconfig"], {}, "--kubeconfig: cannot read"),
        (["--max-concurency", "4"], {}, "unrecognized arguments: --max-concurency 4"),
        (["--grace"], {}, "argument --grace: expected one argument"),
        (["--log-format", "yaml"], {}, "--log-format: 'yaml' is not one of json, text"),
        (["--metrics-listen", "9090"], {}, "--metrics-listen: '9090' is not HOST:PORT"),
    ],
)
async def test_bad_configuration_is_one_line_and_exit_2(
    args: list[str], env: dict[str, str], line: str
) -> None:
    code, out, err = await _server(*args, env=_clean_env(**env))
    assert code == 2
    assert out == ""
    assert err.startswith("k8sailor-server: ")
    assert line in err
    assert err.count("\n") == 1, err


async def test_a_kubeconfig_that_is_not_one_is_one_line_and_exit_2(tmp_path: Path) -> None:
    garbage = tmp_path / "kubeconfig"
    garbage.write_text("clusters: [this is: not {a kubeconfig\n")
    code, _, err = await _server("--kubeconfig", str(garbage), env=_clean_env())
    assert code == 2
    assert err.count("\n") == 1, err
    # Found after the logs are set up, so it is a log line: JSON, as stderr is no terminal.
    line = json.loads(err)
    assert line["level"] == "CRITICAL"
    assert line["message"].startswith("k8sailor-server: no usable cluster configuration: "), err


async def test_a_second_server_on_a_busy_port_is_refused(api_client: client.ApiClient) -> None:
    async with serving(api_client, ServerConfig(listen="127.0.0.1:0")) as first:
        busy = f"127.0.0.1:{first.port}"
        with pytest.raises(ListenError, match=f"cannot listen on {busy}: the port is in use"):
            async with serving(api_client, ServerConfig(listen=busy)):
                pass
        # The first one still serves (it was not joined by the second on a shared port).
        async with grpc.aio.insecure_channel(busy) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_the_server_process_on_a_busy_port_exits_2(cluster: Cluster) -> None:
    target = f"127.0.0.1:{free_port()}"
    env = _clean_env(KUBECONFIG=str(cluster.kubeconfig))
    first = await asyncio.create_subprocess_exec(
        SERVER, "--listen", target, env=env, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        await wait_serving(target, first, within=120)
        code, _, err = await _server("--listen", target, env=env)
        assert code == 2
        assert f"k8sailor-server: cannot listen on {target}: the port is in use" in err
        assert "Traceback" not in err
        assert first.returncode is None
    finally:
        first.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(first.wait(), 30) == 0


@pytest.mark.parametrize("flag", ["--metrics-listen", "--health-listen"])
async def test_a_busy_metrics_or_health_port_is_one_line_and_exit_2(
    cluster: Cluster, flag: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        env = _clean_env(KUBECONFIG=str(cluster.kubeconfig))
        code, _, err = await _server("--listen", f"127.0.0.1:{free_port()}", flag, busy, env=env)
    assert code == 2
    # After the logs are set up: the start-up line, then the error as one JSON log line.
    line = json.loads(err.splitlines()[-1])
    assert line["level"] == "CRITICAL"
    assert busy in line["message"], err
    assert f"({flag})" in line["message"], err
    assert "Traceback" not in err


async def test_a_second_signal_during_the_drain_exits_at_once(
    cluster: Cluster, namespace: str, deployment: dict[str, Any]
) -> None:
    """One API slot and a long grace: the drain would take many seconds; a second SIGINT
    after SIGTERM cuts it short, the caller sees its call end, and the exit status is 1."""
    target = f"127.0.0.1:{free_port()}"
    process = await asyncio.create_subprocess_exec(
        SERVER, "--listen", target, "--max-concurrency", "1", "--grace", "600",
        env=_clean_env(KUBECONFIG=str(cluster.kubeconfig)), stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await wait_serving(target, process, within=120)
        rules = [f"svc-{i}=80" for i in range(200)]
        seen = 0
        ended_by: str | None = None
        async with connect(target) as c:
            try:
                async for _ in c.create_services("web", rules, namespace=namespace):
                    seen += 1
                    if seen == 1:
                        process.send_signal(signal.SIGTERM)
                        await asyncio.sleep(0.3)
                        process.send_signal(signal.SIGINT)
            except Exception as error:  # the call is cut: how is the server's business
                ended_by = type(error).__name__
        assert await asyncio.wait_for(process.wait(), 30) == 1
        assert seen < 200 or ended_by is None
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.stderr is not None
    log = (await process.stderr.read()).decode()
    assert "SIGTERM received: draining for up to 600.0 s" in log
    assert "SIGINT received again: cancelling the calls still running" in log
