"""Behind a mesh sidecar: the client's SPIFFE ID from Envoy's x-forwarded-client-cert header,
believed only with --trust-forwarded-client-cert and only from a loopback peer."""

from __future__ import annotations

import socket

import grpc
import pytest
from kubernetes_asyncio import client

from k8sailor.v1 import exposure_pb2 as pb
from k8sailor.v1 import exposure_pb2_grpc as pb_grpc
from server.auth.settings import Authorization, AuthSettings
from tests.auth.conftest import Pki, Serve, Teams, bind, service_account_subject, tls

SIDECAR = "spiffe://cluster.local/ns/k8sailor/sa/k8sailor"


def forwarded(namespace: str, account: str) -> str:
    """The header as Istio's sidecar writes it for a client it verified."""
    return (
        f'By={SIDECAR};Hash=0f3b2c;Subject="CN=ignored,O=ignored";'
        f"URI=spiffe://cluster.local/ns/{namespace}/sa/{account}"
    )


MESH = AuthSettings(authorization=Authorization.RBAC, trust_forwarded_client_cert=True)


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


async def test_the_sidecar_header_from_loopback_names_the_caller(
    serve: Serve, teams: Teams, deployer: None
) -> None:
    header = (("x-forwarded-client-cert", forwarded(teams.a, "deployer")),)
    async with serve(MESH) as target, grpc.aio.insecure_channel(target) as channel:
        results = await call(channel, teams.a, header)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(channel, teams.b, header)

    assert [result.outcome for result in results] == [pb.OUTCOME_CREATED]
    assert raised.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_without_the_flag_the_header_is_ignored(
    serve: Serve, pki: Pki, teams: Teams, deployer: None
) -> None:
    header = (("x-forwarded-client-cert", forwarded(teams.a, "deployer")),)
    credentials = grpc.ssl_channel_credentials(pki.ca.pem)
    async with serve(tls(pki)) as target, grpc.aio.secure_channel(target, credentials) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(channel, teams.a, header)

    assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "x-forwarded-client-cert" not in (raised.value.details() or "")


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
    serve: Serve, teams: Teams, deployer: None
) -> None:
    header = (("x-forwarded-client-cert", forwarded(teams.a, "deployer")),)
    # Plaintext on a routable address needs --insecure; it is the peer that matters here.
    exposed = AuthSettings(
        authorization=Authorization.RBAC, trust_forwarded_client_cert=True, insecure=True
    )
    async with (
        serve(exposed, host=non_loopback_address()) as target,
        grpc.aio.insecure_channel(target) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(channel, teams.a, header)

    assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_a_bearer_token_over_plaintext_is_not_sent_for_review(
    serve: Serve, teams: Teams
) -> None:
    async with serve(MESH) as target, grpc.aio.insecure_channel(target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(channel, teams.a, (("authorization", "Bearer some-token"),))

    assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert raised.value.details() == (
        "this server needs to know who is calling: send an x-forwarded-client-cert header "
        "from the mesh sidecar (loopback); a bearer token was sent over plaintext and ignored "
        "(TLS only)"
    )
