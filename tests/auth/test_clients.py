"""The commands with TLS flags against a server with mutual TLS or tokens and RBAC: the Python
`k8sailor` CLI and the Go `k8sailor-go`, by flag and by K8SAILOR_* environment variable."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from tests.auth.conftest import (
    Pki,
    Serve,
    Teams,
    bind,
    mtls,
    request_token,
    service_account,
    service_account_subject,
    service_names,
    tls,
)
from tests.e2e.test_go_client import BUILD_TIMEOUT, GO_MODULE, Finished, go_tool, run


@pytest.fixture(scope="session")
async def go_command(tmp_path_factory: pytest.TempPathFactory) -> Path:
    binary = tmp_path_factory.mktemp("go-auth") / "k8sailor-go"
    built = await run(
        go_tool(), "build", "-o", binary, "./cmd/k8sailor-go", cwd=GO_MODULE, timeout=BUILD_TIMEOUT
    )
    assert built.code == 0, built.err
    return binary


def outcomes(finished: Finished) -> dict[str, str]:
    """service name -> outcome, from the table both commands print."""
    return {row[2]: row[1] for row in finished.rows().values()}


@pytest.fixture
async def internal_in_a(
    api_client: client.ApiClient, teams: Teams, caller_roles: list[str]
) -> None:
    """User alice (a certificate) and ServiceAccount deployer (a token) may create ClusterIP
    and headless Services in team-a."""
    user = {"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}
    await bind(api_client, teams.a, "k8sailor-expose-internal", user)
    await service_account(api_client, teams.a, "deployer")
    await bind(api_client, teams.a, "k8sailor-expose-internal",
               service_account_subject(teams.a, "deployer"))  # fmt: skip


@pytest.mark.parametrize("command", ["python", "go"])
async def test_client_certificate_flags(
    command: str,
    go_command: Path,
    serve: Serve,
    pki: Pki,
    teams: Teams,
    internal_in_a: None,
    api_client: client.ApiClient,
    tmp_path: Path,
) -> None:
    cert, key = pki.ca.issue(common_name="alice").write(tmp_path, "alice")
    program: list[str | Path] = (
        [sys.executable, "-m", "client.cli", "expose"] if command == "python" else [go_command]
    )
    async with serve(mtls(pki)) as target:
        finished = await run(
            *program, "--server", target, "-n", teams.a, "--ca-file", pki.ca_file,
            "--cert-file", cert, "--key-file", key, "web", "80:8080", "#81:8080", "!82:8080",
        )  # fmt: skip

    assert finished.code == 1, finished  # one rule was denied
    assert outcomes(finished) == {"web": "CREATED", "web-headless": "CREATED", "-": "DENIED"}
    assert "alice may not create services/nodeport" in finished.out
    assert await service_names(api_client, teams.a) == {"web", "web-headless"}


@pytest.mark.parametrize("command", ["python", "go"])
async def test_token_file_from_the_environment(
    command: str,
    go_command: Path,
    serve: Serve,
    pki: Pki,
    teams: Teams,
    internal_in_a: None,
    api_client: client.ApiClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(await request_token(api_client, teams.a, "deployer", ["k8sailor"]))
    monkeypatch.setenv("K8SAILOR_CA_FILE", str(pki.ca_file))
    monkeypatch.setenv("K8SAILOR_TOKEN_FILE", str(token_file))
    program: list[str | Path] = (
        [sys.executable, "-m", "client.cli", "expose"] if command == "python" else [go_command]
    )
    async with serve(tls(pki)) as target:
        allowed = await run(*program, "--server", target, "-n", teams.a, "web", "80:8080")
        denied = await run(*program, "--server", target, "-n", teams.b, "web", "80:8080")

    assert allowed.code == 0, allowed
    assert outcomes(allowed) == {"web": "CREATED"}
    assert denied.code == 2, denied
    assert "PERMISSION_DENIED" in denied.err
    assert await service_names(api_client, teams.b) == set()
