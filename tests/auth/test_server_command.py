"""`k8sailor-server` with its TLS and RBAC flags, as an operator starts it."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import grpc
from kubernetes_asyncio import client

from client import Outcome, connect
from tests.auth.conftest import Pki, Teams, bind
from tests.conftest import Cluster
from tests.controlplane import free_port
from tests.servers import wait_serving


async def test_the_server_command_serves_mutual_tls_with_rbac(
    cluster: Cluster,
    pki: Pki,
    teams: Teams,
    api_client: client.ApiClient,
    caller_roles: list[str],
    tmp_path: Path,
) -> None:
    user = {"kind": "User", "name": "erin", "apiGroup": "rbac.authorization.k8s.io"}
    await bind(api_client, teams.a, "k8sailor-expose-internal", user)
    erin = pki.ca.issue(common_name="erin")
    target = f"127.0.0.1:{free_port()}"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", "--listen", target, "--kubeconfig", str(cluster.kubeconfig),
        "--tls-cert-file", str(pki.server_cert), "--tls-private-key-file", str(pki.server_key),
        "--client-ca-file", str(pki.ca_file),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        credentials = grpc.ssl_channel_credentials(pki.ca.pem, erin.private_key, erin.certificate)
        await wait_serving(target, credentials=credentials, within=120)
        async with connect(target, credentials=credentials) as k8sailor:
            outcomes = {
                result.rule: result.outcome
                async for result in k8sailor.create_services(
                    "web", ["80:8080", "!80:8080"], namespace=teams.a, timeout=20
                )
            }
    finally:
        process.terminate()
        _, err = await process.communicate()

    assert outcomes == {"80:8080": Outcome.CREATED, "!80:8080": Outcome.DENIED}
    assert process.returncode == 0, err.decode()
    assert b'"user":"erin"' in err
    assert b'"authn":"certificate"' in err


async def test_a_routable_listen_in_plaintext_exits_2_with_one_line(cluster: Cluster) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", "--listen", "0.0.0.0:0",
        "--kubeconfig", str(cluster.kubeconfig),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()

    assert process.returncode == 2
    assert out == b""
    (line,) = err.decode().splitlines()
    assert line.startswith("k8sailor-server: --listen 0.0.0.0:0 is reachable from other hosts")
    assert "or --insecure to do it anyway" in line
