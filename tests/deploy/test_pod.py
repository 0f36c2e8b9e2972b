"""The installed wheel, run as the pod runs it: who it runs as, what it serves where, what it
writes (nothing), and how it stops."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from k8sailor.v1 import exposure_pb2, exposure_pb2_grpc
from server.auth.settings import Authorization
from server.config import load
from tests.deploy.conftest import Install, PodServer

WORLD_WRITABLE = (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"))


def _ids(pid: int) -> tuple[int, int, list[int]]:
    """Effective uid, gid and supplementary groups of a process, from /proc."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    uid = int(fields["Uid"].split()[1])
    gid = int(fields["Gid"].split()[1])
    return uid, gid, [int(group) for group in fields["Groups"].split()]


def test_the_deployments_settings_are_a_configuration_the_server_accepts(
    pod_server: PodServer,
) -> None:
    """With the Deployment's own addresses, which the tests replace with loopback ones to run:
    a routable --listen is refused without TLS, so this is where a missing setting shows."""
    config = load([], pod_server.declared_env)
    assert config.listen == "[::]:50051"
    assert config.auth.tls
    assert config.auth.mode is Authorization.RBAC


def test_it_runs_as_the_deployments_numeric_non_root_user(
    install: Install, pod_server: PodServer
) -> None:
    uid, gid, groups = _ids(pod_server.process.process.pid)
    if os.geteuid() == 0:
        assert (uid, gid) == install.run_as
        assert groups == []
    assert uid != 0


@pytest.mark.parametrize("service", ["", "k8sailor.v1.ExposureService"])
async def test_the_health_port_answers_serving(pod_server: PodServer, service: str) -> None:
    async with grpc.aio.insecure_channel(pod_server.health_target) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_the_health_port_serves_nothing_but_health(pod_server: PodServer) -> None:
    """It is plaintext for the kubelet: ExposureService is not reachable through it."""
    async with grpc.aio.insecure_channel(pod_server.health_target) as channel:
        stub = exposure_pb2_grpc.ExposureServiceStub(channel)
        call = stub.CreateServices(
            exposure_pb2.CreateServicesRequest(namespace="default", deployment="web"), timeout=5
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            _ = [reply async for reply in call]
    assert raised.value.code() is grpc.StatusCode.UNIMPLEMENTED


def _owned_by(uid: int, roots: tuple[Path, ...]) -> list[Path]:
    found = []
    for root in roots:
        for directory, subdirectories, files in os.walk(root, onerror=lambda _: None):
            for name in subdirectories + files:
                path = Path(directory, name)
                try:
                    if path.lstat().st_uid == uid:
                        found.append(path)
                except OSError:
                    continue
    return found


def test_it_writes_no_file(install: Install, pod_server: PodServer) -> None:
    """The pod's root filesystem is read-only and nothing writable is mounted, so the server
    must need to write nothing: its working directory and its installation are not writable by
    it, and it has left no file of its own where anyone may write."""
    assert list(pod_server.workdir.iterdir()) == []
    if os.geteuid() == 0:
        uid, _ = install.run_as
        assert _owned_by(uid, WORLD_WRITABLE) == []


def test_the_metrics_port_serves_prometheus_metrics(pod_server: PodServer) -> None:
    url = f"http://{pod_server.metrics_target}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    assert "# TYPE grpc_server_started_total counter" in text
    assert "# TYPE k8sailor_kube_requests_total counter" in text
