"""A 401 reloads k8sailor's own credentials once; if they are still refused, the caller is
told that k8sailor's credentials (not the caller's) were refused, as UNAVAILABLE."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from kubernetes_asyncio import client

from client import Outcome, RequestFailed
from server.app import ServerConfig
from server.kube import load_api_client
from tests.conftest import Cluster
from tests.faults.identity import (
    exec_runs,
    exec_user,
    kubeconfig_for,
    service_account_token,
    token_file_user,
)
from tests.faults.observers import RecordingObserver
from tests.servers import k8sailor_over

REFUSED = "not-a-token-the-api-server-knows"
# A GET per request (no Deployment watch), so that the calls seen are the request's own.
READ_EACH_TIME = ServerConfig(listen="127.0.0.1:0", deployment_cache="off")

UserMaker = Callable[[Path, str], dict[str, Any]]


@pytest.mark.parametrize("make_user", [token_file_user, exec_user], ids=["token-file", "exec"])
async def test_a_rotated_credential_is_loaded_again_after_a_401(
    cluster: Cluster,
    api_client: client.ApiClient,
    namespace: str,
    deployment: dict[str, Any],
    tmp_path: Path,
    make_user: UserMaker,
) -> None:
    token = await service_account_token(api_client, namespace)
    kubeconfig = kubeconfig_for(cluster.kubeconfig, tmp_path, make_user(tmp_path, REFUSED))
    api = await load_api_client(str(kubeconfig), None, pool_size=4)
    # The credential is rotated after k8sailor loaded it: the token it holds is refused.
    (tmp_path / "token").write_text(token)
    observer = RecordingObserver()
    async with api, k8sailor_over(api, observer, READ_EACH_TIME) as k8sailor:
        results = [
            r async for r in k8sailor.create_services("web", ["80:8088"], namespace=namespace)
        ]
    assert [result.outcome for result in results] == [Outcome.CREATED]
    assert observer.finished[:2] == [
        ("get", "deployments", "401"),
        ("get", "deployments", "200"),
    ]
    assert observer.retry_reasons() == {"Unauthorized": 1}
    if make_user is exec_user:
        assert exec_runs(tmp_path) == 2  # loaded at start, and again after the 401


@pytest.mark.parametrize("make_user", [token_file_user, exec_user], ids=["token-file", "exec"])
async def test_credentials_refused_after_reloading_are_unavailable_not_denied(
    cluster: Cluster,
    namespace: str,
    deployment: dict[str, Any],
    tmp_path: Path,
    make_user: UserMaker,
) -> None:
    kubeconfig = kubeconfig_for(cluster.kubeconfig, tmp_path, make_user(tmp_path, REFUSED))
    api = await load_api_client(str(kubeconfig), None, pool_size=4)
    observer = RecordingObserver()
    async with api, k8sailor_over(api, observer, READ_EACH_TIME) as k8sailor:
        with pytest.raises(RequestFailed) as raised:
            _ = [r async for r in k8sailor.create_services("web", ["80"], namespace=namespace)]
    assert raised.value.code is grpc.StatusCode.UNAVAILABLE
    assert "the API server refused k8sailor's own credentials" in raised.value.details
    assert "again after loading them anew" in raised.value.details
    # Exactly one reload and one more attempt: a 401 is not retried like a 429.
    assert observer.codes() == {"401": 2}
