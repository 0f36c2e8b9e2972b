"""deploy/components/istio-mesh over the base: its parts agree with each other and with the
server's flags, and the API server admits the Deployment under the restricted profile."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from server.auth.settings import mesh_socket
from tests.deploy import manifests
from tests.deploy.conftest import Install

COMPONENT = manifests.BASE / "components" / "istio-mesh"


@pytest.fixture(scope="module")
def rendered(install: Install, tmp_path_factory: pytest.TempPathFactory) -> list[manifests.Doc]:
    directory = tmp_path_factory.mktemp("mesh-overlay")
    base = os.path.relpath(manifests.BASE, directory)
    component = os.path.relpath(COMPONENT, directory)
    (directory / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        f"namespace: {install.namespace}\n"
        f"namePrefix: {install.namespace}-\n"
        f"resources:\n  - {base}\n"
        f"components:\n  - {component}\n"
    )
    return manifests.render(install.kubectl, directory)


def _pod(docs: list[manifests.Doc]) -> manifests.Doc:
    template: manifests.Doc = manifests.one(docs, "Deployment")["spec"]["template"]
    return template


def test_the_socket_is_where_the_sidecar_sends_and_both_containers_mount_it(
    rendered: list[manifests.Doc],
) -> None:
    pod = _pod(rendered)
    env = manifests.container_env(rendered)
    socket = mesh_socket(env["K8SAILOR_MESH_LISTEN"])
    assert socket is not None
    (ingress,) = manifests.one(rendered, "Sidecar")["spec"]["ingress"]
    assert ingress["defaultEndpoint"] == f"unix://{socket}"

    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    app_mounts = {
        mount["name"]: Path(mount["mountPath"])
        for mount in manifests.container(rendered)["volumeMounts"]
    }
    proxy_mounts = {
        mount["name"]: Path(mount["mountPath"])
        for mount in json.loads(pod["metadata"]["annotations"]["sidecar.istio.io/userVolumeMount"])
    }
    shared = {name for name, path in app_mounts.items() if path == socket.parent}
    assert shared == {name for name, path in proxy_mounts.items() if path == socket.parent}
    (name,) = shared
    assert "emptyDir" in volumes[name]
    # The socket is 0660: the proxy gets in by the pod's fsGroup.
    assert pod["spec"]["securityContext"]["fsGroup"] == 65532


def test_only_the_grpc_port_goes_through_the_proxy_and_tcp_stays_on_loopback(
    rendered: list[manifests.Doc],
) -> None:
    pod = _pod(rendered)
    env = manifests.container_env(rendered)
    service_ports = {
        port["name"]: port for port in manifests.one(rendered, "Service")["spec"]["ports"]
    }
    (ingress,) = manifests.one(rendered, "Sidecar")["spec"]["ingress"]
    assert ingress["port"]["number"] == service_ports["grpc"]["port"] == 50051
    assert ingress["port"]["protocol"] == "GRPC"
    assert service_ports["grpc"]["appProtocol"] == "grpc"
    excluded = pod["metadata"]["annotations"]["traffic.sidecar.istio.io/excludeInboundPorts"]
    health = int(env["K8SAILOR_HEALTH_LISTEN"].rsplit(":", 1)[1])
    metrics = int(env["K8SAILOR_METRICS_LISTEN"].rsplit(":", 1)[1])
    assert {int(port) for port in excluded.split(",")} == {health, metrics}
    assert env["K8SAILOR_LISTEN"] == "127.0.0.1:50051"


def test_the_istio_objects_select_the_pods(rendered: list[manifests.Doc]) -> None:
    labels = _pod(rendered)["metadata"]["labels"]
    assert labels["sidecar.istio.io/inject"] == "true"
    sidecar = manifests.one(rendered, "Sidecar")["spec"]["workloadSelector"]["labels"]
    peer = manifests.one(rendered, "PeerAuthentication")["spec"]
    assert sidecar.items() <= labels.items()
    assert peer["selector"]["matchLabels"].items() <= labels.items()
    assert peer["mtls"]["mode"] == "STRICT"


def test_the_deployment_is_admitted_under_the_restricted_profile(
    install: Install, rendered: list[manifests.Doc]
) -> None:
    # The Istio kinds need Istio's CRDs, which this cluster has not; the pod is what PSA sees.
    result = subprocess.run(
        [*install.kubectl, "apply", "--server-side", "--dry-run=server", "-f", "-"],
        input=manifests.to_yaml([manifests.one(rendered, "Deployment")]),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
