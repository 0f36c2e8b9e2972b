"""Serving TLS: certificates rotated on disk are picked up without a restart, and a port
reachable from other hosts is not served in plaintext or unauthorized unless asked for."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kubernetes_asyncio import client

from server.app import ServerConfig, serving
from server.auth.settings import Authorization, AuthSettings
from tests.auth.test_forwarded import non_loopback_address
from tests.pki import CertificateAuthority, Issued


async def healthy(channel: grpc.aio.Channel) -> bool:
    stub = health_pb2_grpc.HealthStub(channel)
    answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


async def refused(target: str, ca: CertificateAuthority) -> grpc.StatusCode:
    """The status of a call on a new connection that trusts only ca."""
    async with grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(ca.pem)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await healthy(channel)
    return raised.value.code()


def replace(path: Path, content: bytes) -> None:
    """Swap a file's content at once, as the kubelet does for a mounted Secret."""
    staged = path.with_suffix(".new")
    staged.write_bytes(content)
    os.replace(staged, path)


async def test_rotated_certificate_files_are_used_for_new_handshakes_without_a_restart(
    api_client: client.ApiClient, tmp_path: Path
) -> None:
    old_ca, new_ca = CertificateAuthority("old"), CertificateAuthority("new")
    cert, key = old_ca.issue(common_name="k8sailor", server=True).write(tmp_path, "server")
    rotated: Issued = new_ca.issue(common_name="k8sailor", server=True)
    settings = AuthSettings(
        tls_cert_file=cert, tls_private_key_file=key, authorization=Authorization.NONE
    )
    async with serving(api_client, ServerConfig("127.0.0.1:0", auth=settings)) as running:
        target = f"127.0.0.1:{running.port}"
        async with grpc.aio.secure_channel(
            target, grpc.ssl_channel_credentials(old_ca.pem)
        ) as before:
            assert await healthy(before)

            # Half a rotation (the new certificate, the old key): not usable, so ignored.
            replace(cert, rotated.certificate)
            async with grpc.aio.secure_channel(
                target, grpc.ssl_channel_credentials(old_ca.pem)
            ) as during:
                still_old = await healthy(during)
            replace(key, rotated.private_key)

            async with grpc.aio.secure_channel(
                target, grpc.ssl_channel_credentials(new_ca.pem)
            ) as after:
                now_new = await healthy(after)
            old_refused = await refused(target, old_ca)
            # The connection made before the rotation goes on working.
            kept = await healthy(before)

    assert still_old
    assert now_new
    assert old_refused is grpc.StatusCode.UNAVAILABLE
    assert kept


async def test_a_routable_address_is_refused_without_tls_or_with_no_authorization(
    api_client: client.ApiClient, tmp_path: Path
) -> None:
    host = non_loopback_address()
    cert, key = CertificateAuthority("ca").issue(server=True).write(tmp_path, "server")
    unauthorized = AuthSettings(
        tls_cert_file=cert, tls_private_key_file=key, authorization=Authorization.NONE
    )

    with pytest.raises(ValueError, match="--insecure") as plaintext:
        async with serving(api_client, ServerConfig(f"{host}:0")):
            pass
    with pytest.raises(ValueError, match="--authorization=none") as no_authorization:
        async with serving(api_client, ServerConfig(f"{host}:0", auth=unauthorized)):
            pass

    assert f"--listen {host}:0 is reachable from other hosts" in str(plaintext.value)
    assert "would serve it in plaintext" in str(plaintext.value)
    assert "would let any caller create any Service" in str(no_authorization.value)


async def test_insecure_serves_a_routable_address_in_plaintext_with_a_warning(
    api_client: client.ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    host = non_loopback_address()
    with caplog.at_level(logging.WARNING, logger="k8sailor.server"):
        async with (
            serving(
                api_client, ServerConfig(f"{host}:0", auth=AuthSettings(insecure=True))
            ) as running,
            grpc.aio.insecure_channel(f"{host}:{running.port}") as channel,
        ):
            serving_ok = await healthy(channel)

    assert serving_ok
    warnings = [record.getMessage() for record in caplog.records]
    assert f"--insecure: serving {host}:0 in plaintext" in warnings
    assert f"--insecure: any caller that reaches {host}:0 is authorized" in warnings
