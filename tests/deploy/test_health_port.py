"""--health-listen: the plaintext port the kubelet's gRPC probes ask, on a real grpc.aio server."""

from __future__ import annotations

import socket

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kubernetes_asyncio import client

from server.app import ListenError, ServerConfig, start_server
from server.config import ConfigError, load

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _status(target: str, service: str = "") -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    status: int = reply.status
    return status


async def test_it_reports_what_the_main_port_reports_through_the_drain(
    api_client: client.ApiClient,
) -> None:
    config = ServerConfig(listen="127.0.0.1:0", health_listen="127.0.0.1:0")
    running = await start_server(api_client, config)
    health = f"127.0.0.1:{running.health_port}"
    try:
        assert await _status(health) == SERVING
        assert await _status(health, "k8sailor.v1.ExposureService") == SERVING
        # What stop() does first: from then on the probes see NOT_SERVING, not a closed port.
        await running.health.enter_graceful_shutdown()
        assert await _status(health, "k8sailor.v1.ExposureService") == NOT_SERVING
        assert await _status(f"127.0.0.1:{running.port}") == NOT_SERVING
    finally:
        await running.stop(0)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _status(health)
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_a_busy_health_port_is_a_listen_error_that_names_the_flag(
    api_client: client.ApiClient,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = ServerConfig(listen="127.0.0.1:0", health_listen=f"127.0.0.1:{port}")
        with pytest.raises(ListenError) as raised:
            await start_server(api_client, config)
    assert f"cannot listen on 127.0.0.1:{port} (--health-listen)" in str(raised.value)


def test_it_is_off_unless_set_and_checked_when_set() -> None:
    assert load([], {}).health_listen == ""
    assert load([], {"K8SAILOR_HEALTH_LISTEN": "[::]:50052"}).health_listen == "[::]:50052"
    with pytest.raises(ConfigError) as raised:
        load([], {"K8SAILOR_HEALTH_LISTEN": "50052"})
    assert str(raised.value).startswith("K8SAILOR_HEALTH_LISTEN: '50052' is not HOST:PORT")


def test_the_service_account_dir_defaults_to_where_the_kubelet_mounts_it() -> None:
    assert load([], {}).service_account_dir == "/var/run/secrets/kubernetes.io/serviceaccount"
    assert load(["--service-account-dir", "/run/sa"], {}).service_account_dir == "/run/sa"
