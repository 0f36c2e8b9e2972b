"""Identities other than the admin: a service account with a real token, and kubeconfigs that
hand it over as a token file or through an exec plugin (for the 401 and throttling tests)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client

ACCOUNT = "k8sailor"

# An exec credential plugin, as kubectl runs them: it prints an ExecCredential with whatever
# token is in the file next to it now, and counts its runs, so a test can see a reload.
EXEC_PLUGIN = """\
import json, pathlib, sys
here = pathlib.Path(sys.argv[1])
with (here / "exec-runs").open("a") as runs:
    runs.write("run\\n")
token = (here / "token").read_text().strip()
print(json.dumps({
    "apiVersion": "client.authentication.k8s.io/v1",
    "kind": "ExecCredential",
    "status": {"token": token},
}))
"""


async def service_account_token(admin: client.ApiClient, namespace: str) -> str:
    """A bound token of a service account with what k8sailor needs in namespace.

    A Role of its own: the bootstrap "edit" role is filled in by the controller-manager's
    role aggregation, which this control plane does not run."""
    core = client.CoreV1Api(admin)
    await core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=ACCOUNT))
    )
    rbac = client.RbacAuthorizationV1Api(admin)
    rules = [
        client.V1PolicyRule(api_groups=["apps"], resources=["deployments"], verbs=["get"]),
        client.V1PolicyRule(api_groups=[""], resources=["services"], verbs=["get", "create"]),
    ]
    await rbac.create_namespaced_role(
        namespace, client.V1Role(metadata=client.V1ObjectMeta(name=ACCOUNT), rules=rules)
    )
    await rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name=ACCOUNT),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name=ACCOUNT
            ),
            subjects=[
                client.RbacV1Subject(kind="ServiceAccount", name=ACCOUNT, namespace=namespace)
            ],
        ),
    )
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    issued = await core.create_namespaced_service_account_token(ACCOUNT, namespace, request)
    token: str = issued.status.token
    return token


def _cluster_of(admin_kubeconfig: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(admin_kubeconfig.read_text())
    current = next(c for c in loaded["contexts"] if c["name"] == loaded["current-context"])
    cluster: dict[str, Any] = next(
        c["cluster"] for c in loaded["clusters"] if c["name"] == current["context"]["cluster"]
    )
    return dict(cluster)


def kubeconfig_for(
    admin_kubeconfig: Path, directory: Path, user: dict[str, Any], server: str | None = None
) -> Path:
    """A kubeconfig for the admin's cluster (or `server` in front of it) and another user."""
    cluster = _cluster_of(admin_kubeconfig)
    if server is not None:
        cluster["server"] = server
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }
    path = directory / "kubeconfig"
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path


def token_file_user(directory: Path, token: str) -> dict[str, Any]:
    (directory / "token").write_text(token)
    return {"tokenFile": str(directory / "token")}


def exec_user(directory: Path, token: str) -> dict[str, Any]:
    (directory / "token").write_text(token)
    plugin = directory / "plugin.py"
    plugin.write_text(EXEC_PLUGIN)
    return {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(plugin), str(directory)],
            "interactiveMode": "Never",
        }
    }


def exec_runs(directory: Path) -> int:
    runs = directory / "exec-runs"
    return len(runs.read_text().splitlines()) if runs.exists() else 0


async def service_account_kubeconfig(
    admin: client.ApiClient, admin_kubeconfig: Path, namespace: str, directory: Path
) -> Path:
    token = await service_account_token(admin, namespace)
    return kubeconfig_for(admin_kubeconfig, directory, token_file_user(directory, token))


def server_of(kubeconfig: Path) -> str:
    server: str = _cluster_of(kubeconfig)["server"]
    return server


def through(admin_kubeconfig: Path, directory: Path, server: str) -> Path:
    """The admin kubeconfig with its cluster reached at server (a proxy) instead."""
    loaded = yaml.safe_load(admin_kubeconfig.read_text())
    current = next(c for c in loaded["contexts"] if c["name"] == loaded["current-context"])
    for cluster in loaded["clusters"]:
        if cluster["name"] == current["context"]["cluster"]:
            cluster["cluster"]["server"] = server
    path = directory / "kubeconfig-through-proxy"
    path.write_text(json.dumps(loaded, indent=2))
    path.chmod(0o600)
    return path
