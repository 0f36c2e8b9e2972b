"""Real servers with TLS and RBAC on the real API server, and what callers need to prove who
they are: certificates from a test CA, ServiceAccount tokens from the TokenRequest API, and
RoleBindings to the ClusterRoles shipped in deploy/callers/."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from server.app import ServerConfig, serving
from server.auth.settings import AuthSettings
from tests import objects
from tests.pki import CertificateAuthority
from tests.rbac import until_effective

REPO = Path(__file__).resolve().parents[2]
CALLER_ROLES = REPO / "deploy" / "callers"
SELECTOR = {"app": "web"}


@dataclass(frozen=True)
class Pki:
    directory: Path
    ca: CertificateAuthority
    ca_file: Path
    other_ca: CertificateAuthority
    server_cert: Path
    server_key: Path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority("k8sailor-test-client-ca")
    ca_file = directory / "ca.crt"
    ca_file.write_bytes(ca.pem)
    cert, key = ca.issue(common_name="k8sailor", server=True).write(directory, "server")
    return Pki(directory, ca, ca_file, CertificateAuthority("someone-else"), cert, key)


def mtls(pki: Pki, **extra: Any) -> AuthSettings:
    return AuthSettings(
        tls_cert_file=pki.server_cert,
        tls_private_key_file=pki.server_key,
        client_ca_file=pki.ca_file,
        **extra,
    )


def tls(pki: Pki, **extra: Any) -> AuthSettings:
    return AuthSettings(tls_cert_file=pki.server_cert, tls_private_key_file=pki.server_key, **extra)


class Serve(Protocol):
    def __call__(
        self, settings: AuthSettings, host: str = "127.0.0.1"
    ) -> AbstractAsyncContextManager[str]: ...


@pytest.fixture
def serve(api_client: client.ApiClient) -> Serve:
    """`async with serve(settings) as target`: a server of the test's own on a free port."""

    @asynccontextmanager
    async def serve(settings: AuthSettings, host: str = "127.0.0.1") -> AsyncIterator[str]:
        config = ServerConfig(listen=f"{host}:0", auth=settings)
        async with serving(api_client, config, grace=0.5) as running:
            yield f"{host}:{running.port}"

    return serve


@dataclass(frozen=True)
class Teams:
    """Two namespaces, each with a Deployment "web"."""

    a: str
    b: str


@pytest.fixture
async def teams(api_client: client.ApiClient) -> AsyncIterator[Teams]:
    stem = f"k8sailor-test-{uuid.uuid4().hex[:8]}"
    names = Teams(a=f"{stem}-team-a", b=f"{stem}-team-b")
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    for name in (names.a, names.b):
        await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        await apps.create_namespaced_deployment(
            name, objects.deployment("web", SELECTOR, [("http", 8080, "TCP")])
        )
    yield names
    for name in (names.a, names.b):
        for service in (await core.list_namespaced_service(name)).items:
            await core.delete_namespaced_service(service.metadata.name, name)
        await core.delete_namespace(name)


@pytest.fixture(scope="session")
async def caller_roles(api_client: client.ApiClient) -> list[str]:
    """The ClusterRoles of deploy/callers/, applied to the cluster as shipped."""
    rbac = client.RbacAuthorizationV1Api(api_client)
    names = []
    for path in sorted(CALLER_ROLES.glob("*.yaml")):
        role = yaml.safe_load(path.read_text())
        name = role["metadata"]["name"]
        try:
            await rbac.create_cluster_role(role)
        except ApiException as error:
            if error.status != 409:
                raise
            await rbac.replace_cluster_role(name, role)
        names.append(name)
    return names


async def bind(
    api_client: client.ApiClient,
    namespace: str,
    cluster_role: str,
    subject: dict[str, str],
) -> None:
    """A RoleBinding in namespace from subject to one of the shipped ClusterRoles."""
    binding: Any = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": f"{cluster_role}-{uuid.uuid4().hex[:6]}"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": cluster_role,
        },
        "subjects": [subject],
    }
    rbac = client.RbacAuthorizationV1Api(api_client)
    await rbac.create_namespaced_role_binding(namespace, binding)
    role = await rbac.read_cluster_role(cluster_role)
    await until_effective(api_client, namespace, subject, role.rules[0])


async def grant_role(
    api_client: client.ApiClient,
    namespace: str,
    subject: dict[str, str],
    subresources: list[str],
    resource_names: list[str] | None = None,
) -> None:
    """A Role of the test's own (e.g. only some Deployments) and a RoleBinding to it."""
    name = f"expose-{uuid.uuid4().hex[:6]}"
    rule: dict[str, Any] = {
        "apiGroups": ["k8sailor.io"],
        "resources": [f"services/{sub}" for sub in subresources],
        "verbs": ["create"],
    }
    if resource_names is not None:
        rule["resourceNames"] = resource_names
    role: Any = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name},
        "rules": [rule],
    }
    binding: Any = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [subject],
    }
    rbac = client.RbacAuthorizationV1Api(api_client)
    await rbac.create_namespaced_role(namespace, role)
    await rbac.create_namespaced_role_binding(namespace, binding)
    policy = client.V1PolicyRule(
        api_groups=rule["apiGroups"],
        resources=rule["resources"],
        verbs=rule["verbs"],
        resource_names=rule.get("resourceNames"),
    )
    await until_effective(api_client, namespace, subject, policy)


def service_account_subject(namespace: str, name: str) -> dict[str, str]:
    return {"kind": "ServiceAccount", "name": name, "namespace": namespace}


async def service_account(api_client: client.ApiClient, namespace: str, name: str) -> str:
    """Create the ServiceAccount (no controller makes them here); returns its uid."""
    body: Any = {"metadata": {"name": name}}
    created = await client.CoreV1Api(api_client).create_namespaced_service_account(namespace, body)
    uid: str = created.metadata.uid
    return uid


async def request_token(
    api_client: client.ApiClient,
    namespace: str,
    name: str,
    audiences: list[str],
    bound_to: dict[str, str] | None = None,
) -> str:
    """A token from the TokenRequest API, as the kubelet gets projected tokens."""
    spec: dict[str, Any] = {"audiences": audiences, "expirationSeconds": 600}
    if bound_to is not None:
        spec["boundObjectRef"] = bound_to
    body: Any = {"apiVersion": "authentication.k8s.io/v1", "spec": spec}
    answer = await client.CoreV1Api(api_client).create_namespaced_service_account_token(
        name, namespace, body
    )
    token: str = answer.status.token
    return token


async def service_names(api_client: client.ApiClient, namespace: str) -> set[str]:
    listed = await client.CoreV1Api(api_client).list_namespaced_service(namespace)
    return {item.metadata.name for item in listed.items}
