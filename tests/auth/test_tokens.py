"""Bearer tokens over TLS: ServiceAccount tokens from the TokenRequest API, judged by the API
server's TokenReview for the audience k8sailor, then authorized by RBAC like any caller."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from kubernetes_asyncio import client

from client import Outcome, RequestFailed, connect
from k8sailor.v1 import exposure_pb2 as pb
from k8sailor.v1 import exposure_pb2_grpc as pb_grpc
from server.app import ServerConfig, serving
from server.auth.review_bounds import ReviewBounds
from tests.auth.conftest import (
    Pki,
    Serve,
    Teams,
    bind,
    request_token,
    service_account,
    service_account_subject,
    service_names,
    tls,
)
from tests.conftest import Cluster
from tests.controlplane import free_port
from tests.faults.observers import RecordingObserver


async def expose_with_token(
    target: str, pki: Pki, token_file: Path, namespace: str, rules: list[str]
) -> dict[str, Outcome]:
    async with connect(target, root_certificates=pki.ca.pem, token_file=token_file) as k8sailor:
        return {
            result.rule: result.outcome
            async for result in k8sailor.create_services(
                "web", rules, namespace=namespace, timeout=20
            )
        }


async def refused(target: str, pki: Pki, token_file: Path, namespace: str) -> RequestFailed:
    with pytest.raises(RequestFailed) as raised:
        await expose_with_token(target, pki, token_file, namespace, ["80:8080"])
    return raised.value


@pytest.fixture
async def deployer(api_client: client.ApiClient, teams: Teams, caller_roles: list[str]) -> str:
    """ServiceAccount "deployer" of team-a, allowed ClusterIP and headless in team-a; its uid."""
    uid = await service_account(api_client, teams.a, "deployer")
    await bind(api_client, teams.a, "k8sailor-expose-internal",
               service_account_subject(teams.a, "deployer"))  # fmt: skip
    return uid


async def test_a_projected_token_for_k8sailor_is_the_service_account(
    serve: Serve,
    pki: Pki,
    teams: Teams,
    deployer: str,
    api_client: client.ApiClient,
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(await request_token(api_client, teams.a, "deployer", ["k8sailor"]))

    async with serve(tls(pki)) as target:
        in_a = await expose_with_token(target, pki, token_file, teams.a, ["80:8080", "^81:8080"])
        in_b = await refused(target, pki, token_file, teams.b)

    assert in_a == {"80:8080": Outcome.CREATED, "^81:8080": Outcome.DENIED}
    assert in_b.code is grpc.StatusCode.PERMISSION_DENIED
    assert await service_names(api_client, teams.b) == set()


async def test_tokens_that_fail_review_are_unauthenticated(
    serve: Serve,
    pki: Pki,
    teams: Teams,
    deployer: str,
    api_client: client.ApiClient,
    tmp_path: Path,
) -> None:
    other_audience = tmp_path / "other-audience"
    other_audience.write_text(await request_token(api_client, teams.a, "deployer", ["vault"]))
    # The API server's own audience: a token for the cluster is not a token for k8sailor.
    cluster_token = tmp_path / "cluster-token"
    cluster_token.write_text(
        await request_token(api_client, teams.a, "deployer", ["https://kubernetes.default.svc"])
    )
    garbage = tmp_path / "garbage"
    garbage.write_text("not-a-token")

    async with serve(tls(pki)) as target:
        failures = {
            name: await refused(target, pki, path, teams.a)
            for name, path in [
                ("other audience", other_audience),
                ("cluster audience", cluster_token),
                ("garbage", garbage),
            ]
        }

    for name, failure in failures.items():
        assert failure.code is grpc.StatusCode.UNAUTHENTICATED, name
        # The review's own error (which a webhook authenticator may fill with its address)
        # is for the log: the caller, who proved nothing, hears only that it was refused.
        assert failure.details == "the API server refused the bearer token (audiences k8sailor)"
    assert await service_names(api_client, teams.a) == set()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed_token(key: rsa.RSAPrivateKey, claims: dict[str, Any]) -> str:
    """A JWT signed with the cluster's service-account key, as kube-apiserver signs them."""
    header = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(claims).encode())
    signature = key.sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{_b64(signature)}"


async def test_an_expired_token_is_unauthenticated(
    serve: Serve,
    pki: Pki,
    teams: Teams,
    deployer: str,
    cluster: Cluster,
    tmp_path: Path,
) -> None:
    if not cluster.local:
        pytest.fail("this test signs tokens with the local control plane's service-account key")
    key = serialization.load_pem_private_key(
        (cluster.kubeconfig.parent / "pki" / "sa.key").read_bytes(), password=None
    )
    assert isinstance(key, rsa.RSAPrivateKey)
    now = int(time.time())

    def token(issued: int, expires: int) -> Path:
        claims = {
            "iss": "https://kubernetes.default.svc",
            "aud": ["k8sailor"],
            "sub": f"system:serviceaccount:{teams.a}:deployer",
            "iat": issued,
            "nbf": issued,
            "exp": expires,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": {
                "namespace": teams.a,
                "serviceaccount": {"name": "deployer", "uid": deployer},
            },
        }
        path = tmp_path / f"token-{expires}"
        path.write_text(signed_token(key, claims))
        return path

    # The same recipe, once current and once expired an hour ago: the first proves the
    # signing is right, so the second is refused for its expiry alone.
    current = token(now - 60, now + 600)
    expired = token(now - 7200, now - 3600)
    async with serve(tls(pki)) as target:
        accepted = await expose_with_token(target, pki, current, teams.a, ["80:8080"])
        failure = await refused(target, pki, expired, teams.a)

    assert accepted == {"80:8080": Outcome.CREATED}
    assert failure.code is grpc.StatusCode.UNAUTHENTICATED
    assert "expired" in failure.details


async def test_the_token_file_is_read_again_for_every_call(
    serve: Serve,
    pki: Pki,
    teams: Teams,
    deployer: str,
    api_client: client.ApiClient,
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("stale-token")

    async with (
        serve(tls(pki)) as target,
        connect(target, root_certificates=pki.ca.pem, token_file=token_file) as k8sailor,
    ):
        with pytest.raises(RequestFailed) as raised:
            async for _ in k8sailor.create_services("web", ["80:8080"], namespace=teams.a):
                pass
        # The kubelet rotates the projected token: the same client picks up the new one.
        token_file.write_text(await request_token(api_client, teams.a, "deployer", ["k8sailor"]))
        results = [
            result.outcome
            async for result in k8sailor.create_services("web", ["80:8080"], namespace=teams.a)
        ]

    assert raised.value.code is grpc.StatusCode.UNAUTHENTICATED
    assert results == [Outcome.CREATED]


async def test_a_call_with_no_identity_is_told_what_is_expected(
    serve: Serve, pki: Pki, teams: Teams
) -> None:
    async with (
        serve(tls(pki)) as target,
        connect(target, root_certificates=pki.ca.pem) as k8sailor,
    ):
        with pytest.raises(RequestFailed) as raised:
            async for _ in k8sailor.create_services("web", ["80:8080"], namespace=teams.a):
                pass

    assert raised.value.code is grpc.StatusCode.UNAUTHENTICATED
    assert raised.value.details == (
        "this server needs to know who is calling: send 'authorization: Bearer <token>' "
        "metadata with a Kubernetes token for audience k8sailor"
    )


async def test_a_token_that_cannot_be_reviewed_is_unavailable_not_unauthenticated(
    pki: Pki, tmp_path: Path
) -> None:
    # An API server that is not there: nothing can be decided, and the caller should retry.
    port = free_port()
    configuration = client.Configuration(host=f"https://127.0.0.1:{port}")
    token_file = tmp_path / "token"
    token_file.write_text("some-token")
    async with (
        client.ApiClient(configuration) as unreachable,
        serving(unreachable, ServerConfig("127.0.0.1:0", auth=tls(pki)), grace=0.5) as running,
    ):
        target = f"127.0.0.1:{running.port}"
        failure = await refused(target, pki, token_file, "default")

    assert failure.code is grpc.StatusCode.UNAVAILABLE
    # Why, in one word; never the API server's address to a caller who proved nothing.
    assert failure.details == (
        "the token could not be reviewed: the API server did not answer the review "
        "(Unreachable); try again"
    )
    assert str(port) not in failure.details


async def test_a_flood_of_random_tokens_costs_a_few_reviews_and_lets_others_in(
    api_client: client.ApiClient,
    pki: Pki,
    teams: Teams,
    deployer: str,
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(await request_token(api_client, teams.a, "deployer", ["k8sailor"]))
    observer = RecordingObserver()
    config = ServerConfig(listen="127.0.0.1:0", auth=tls(pki))
    request = pb.CreateServicesRequest(
        namespace=teams.a, deployment="web", rules=[pb.Rule(raw="80:8080")]
    )

    async with serving(api_client, config, grace=0.5, observer=observer) as running:
        target = f"127.0.0.1:{running.port}"
        credentials = grpc.ssl_channel_credentials(pki.ca.pem)
        async with grpc.aio.secure_channel(target, credentials) as flooding:
            stub = pb_grpc.ExposureServiceStub(flooding)

            async def random_token() -> grpc.StatusCode:
                token = f"flood-{uuid.uuid4().hex}"
                call = stub.CreateServices(
                    request, metadata=[("authorization", f"Bearer {token}")], timeout=30
                )
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    async for _ in call:
                        pass
                return raised.value.code()

            # One connection: a hundred at once, then a hundred one after another.
            at_once = await asyncio.gather(*(random_token() for _ in range(100)))
            one_by_one = [await random_token() for _ in range(100)]
            # Meanwhile on a connection of its own, a caller with a good token.
            created = await expose_with_token(target, pki, token_file, teams.a, ["80:8080"])

    reviews = [call for call in observer.started if call[1] == "tokenreviews"]
    assert len(reviews) == ReviewBounds().per_connection + 1
    # UNAVAILABLE while the connection's eight were under review, UNAUTHENTICATED after.
    assert set(at_once) <= {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNAVAILABLE}
    assert set(one_by_one) == {grpc.StatusCode.UNAUTHENTICATED}
    assert created == {"80:8080": Outcome.CREATED}
