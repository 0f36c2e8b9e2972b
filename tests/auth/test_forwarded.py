"""Behind a mesh sidecar: the client's SPIFFE ID from Envoy's x-forwarded-client-cert header,
believed only on the --mesh-listen Unix socket, never on a TCP port (loopback included:
`kubectl port-forward` and every container of the pod arrive there too)."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from kubernetes_asyncio import client

from k8sailor.v1 import exposure_pb2 as pb
from k8sailor.v1 import exposure_pb2_grpc as pb_grpc
from server.app import ServerConfig, serving
from server.auth.settings import AuthSettings
from server.config import load
from server.listening import ListenError
from tests.auth.conftest import Pki, Serve, Teams, bind, service_account_subject, tls

SIDECAR = "spiffe://cluster.local/ns/k8sailor/sa/k8sailor"


def forwarded(namespace: str, account: str, trust_domain: str = "cluster.local") -> str:
    """The header as Istio's sidecar writes it for a client it verified."""
    return (
        f'By={SIDECAR};Hash=0f3b2c;Subject="CN=ignored,O=ignored";'
        f"URI=spiffe://{trust_domain}/ns/{namespace}/sa/{account}"
    )


@pytest.fixture
def mesh_socket() -> Iterator[Path]:
    """A socket path in a directory of the test's own, short enough for sun_path (pytest's
    tmp_path, with the test's name in it, often is not)."""
    directory = Path(tempfile.mkdtemp(prefix="k8sailor-mesh-"))
    yield directory / "mesh.sock"
    shutil.rmtree(directory)


def mesh(socket_path: Path, **extra: Any) -> AuthSettings:
    return AuthSettings(mesh_listen=socket_path, **extra)


async def call(
    channel: grpc.aio.Channel, namespace: str, metadata: tuple[tuple[str, str], ...]
) -> list[pb.CreateServicesResponse]:
    request = pb.CreateServicesRequest(
        namespace=namespace, deployment="web", rules=[pb.Rule(raw="80:8080")]
    )
    stream = pb_grpc.ExposureServiceStub(channel).CreateServices(
        request, metadata=metadata, timeout=20
    )
    return [message async for message in stream]


@pytest.fixture
async def deployer(api_client: client.ApiClient, teams: Teams, caller_roles: list[str]) -> None:
    await bind(api_client, teams.a, "k8sailor-expose-internal",
               service_account_subject(teams.a, "deployer"))  # fmt: skip


async def test_the_sidecar_header_on_the_mesh_socket_names_the_caller(
    serve: Serve, teams: Teams, deployer: None, mesh_socket: Path
) -> None:
    header = (("x-forwarded-client-cert", forwarded(teams.a, "deployer")),)
    async with serve(mesh(mesh_socket)), grpc.aio.insecure_channel(f"unix:{mesh_socket}") as sock:
        mode = stat.S_IMODE(os.stat(mesh_socket).st_mode)
        results = await call(sock, teams.a, header)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(sock, teams.b, header)

    assert [result.outcome for result in results] == [pb.OUTCOME_CREATED]
    assert raised.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert (raised.value.details() or "").startswith(
        f"system:serviceaccount:{teams.a}:deployer may create none"
    )
    # This user and the pod's group (the sidecar's too, by fsGroup) may connect; no one else.
    assert mode == 0o660
    with pytest.raises(FileNotFoundError):  # removed when the server stops
        os.lstat(mesh_socket)


async def test_the_same_header_over_loopback_tcp_is_not_believed(
    serve: Serve, teams: Teams, deployer: None, mesh_socket: Path
) -> None:
    # What `kubectl port-forward` into the pod, or another container of it, would send.
    header = (("x-forwarded-client-cert", forwarded(teams.a, "deployer")),)
    async with serve(mesh(mesh_socket)) as target, grpc.aio.insecure_channel(target) as tcp:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(tcp, teams.a, header)

    assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert raised.value.details() == (
        "this server needs to know who is calling, and this port (plaintext) cannot tell: "
        "call it through the mesh"
    )


async def test_the_old_switch_no_longer_makes_loopback_believed(
    api_client: client.ApiClient, teams: Teams, deployer: None, mesh_socket: Path
) -> None:
    # --trust-forwarded-client-cert once believed the header from any loopback peer. Beside
    # --mesh-listen it is accepted (deprecated), and changes nothing: TCP is still refused.
    config = load(
        ["--listen", "127.0.0.1:0", "--mesh-listen", f"unix:{mesh_socket}",
         "--trust-forwarded-client-cert"],
        environ={},
    )  # fmt: skip
    header = (("x-forwarded-client-cert", forwarded(teams.a, "deployer")),)
    async with (
        serving(api_client, config, grace=0.5) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as tcp,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(tcp, teams.a, header)

    assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_without_the_mesh_socket_the_header_is_ignored(
    serve: Serve, pki: Pki, teams: Teams, deployer: None
) -> None:
    header = (("x-forwarded-client-cert", forwarded(teams.a, "deployer")),)
    credentials = grpc.ssl_channel_credentials(pki.ca.pem)
    async with serve(tls(pki)) as target, grpc.aio.secure_channel(target, credentials) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(channel, teams.a, header)

    assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "x-forwarded-client-cert" not in (raised.value.details() or "")


async def test_on_a_tls_port_beside_the_mesh_socket_the_header_is_ignored(
    serve: Serve, pki: Pki, teams: Teams, deployer: None, mesh_socket: Path
) -> None:
    header = (("x-forwarded-client-cert", forwarded(teams.a, "deployer")),)
    credentials = grpc.ssl_channel_credentials(pki.ca.pem)
    settings = tls(pki, mesh_listen=mesh_socket)
    async with serve(settings) as target, grpc.aio.secure_channel(target, credentials) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(channel, teams.a, header)

    assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert raised.value.details() == (
        "this server needs to know who is calling: send 'authorization: Bearer <token>' "
        "metadata with a Kubernetes token for audience k8sailor"
    )


def non_loopback_address() -> str:
    """An address of this host that is not loopback: the source of its default route."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.1", 9))  # UDP: nothing is sent
        except OSError as error:
            pytest.fail(f"this host has no non-loopback IPv4 address to test with: {error}")
        address: str = probe.getsockname()[0]
    return address


async def test_from_a_peer_that_is_not_loopback_the_header_is_ignored(
    serve: Serve, teams: Teams, deployer: None, mesh_socket: Path
) -> None:
    header = (("x-forwarded-client-cert", forwarded(teams.a, "deployer")),)
    # Plaintext on a routable address needs --insecure; it is the peer that matters here.
    exposed = mesh(mesh_socket, insecure=True)
    async with (
        serve(exposed, host=non_loopback_address()) as target,
        grpc.aio.insecure_channel(target) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(channel, teams.a, header)

    assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_a_header_from_another_trust_domain_is_refused(
    serve: Serve, teams: Teams, deployer: None, mesh_socket: Path
) -> None:
    header = (("x-forwarded-client-cert", forwarded(teams.a, "deployer", "evil.example")),)
    async with serve(mesh(mesh_socket)), grpc.aio.insecure_channel(f"unix:{mesh_socket}") as sock:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(sock, teams.a, header)

    assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert raised.value.details() == (
        f"SPIFFE ID 'spiffe://evil.example/ns/{teams.a}/sa/deployer' is from trust domain "
        "'evil.example', which this server does not believe (it believes cluster.local: "
        "--spiffe-trust-domain)"
    )


async def test_a_trust_domain_given_with_the_flag_is_believed(
    serve: Serve, teams: Teams, deployer: None, mesh_socket: Path
) -> None:
    header = (("x-forwarded-client-cert", forwarded(teams.a, "deployer", "east.example")),)
    settings = mesh(mesh_socket, spiffe_trust_domains=("cluster.local", "east.example"))
    async with serve(settings), grpc.aio.insecure_channel(f"unix:{mesh_socket}") as sock:
        results = await call(sock, teams.a, header)

    assert [result.outcome for result in results] == [pb.OUTCOME_CREATED]


async def test_on_the_mesh_socket_without_the_header_the_caller_is_told_what_counts(
    serve: Serve, teams: Teams, mesh_socket: Path
) -> None:
    async with serve(mesh(mesh_socket)), grpc.aio.insecure_channel(f"unix:{mesh_socket}") as sock:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(sock, teams.a, (("authorization", "Bearer some-token"),))

    assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert raised.value.details() == (
        "this server needs to know who is calling: send an x-forwarded-client-cert header "
        "(the mesh sidecar's); a bearer token was sent over plaintext and ignored (TLS only)"
    )


async def test_a_mesh_socket_that_cannot_be_made_stops_the_start_with_one_line(
    api_client: client.ApiClient, mesh_socket: Path
) -> None:
    # A name in the way that is not an old socket (here a dangling link): gRPC cannot bind.
    os.symlink(mesh_socket.parent / "nowhere", mesh_socket)
    config = ServerConfig(listen="127.0.0.1:0", auth=mesh(mesh_socket))
    with pytest.raises(ListenError) as raised:
        async with serving(api_client, config, grace=0.5):
            pass

    assert str(raised.value) == (
        f"cannot listen on unix:{mesh_socket} (--mesh-listen): the socket cannot be made there "
        "(is its directory writable by this user, with nothing but an old socket at that name?)"
    )
