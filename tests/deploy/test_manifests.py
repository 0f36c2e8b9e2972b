"""The kustomize base as the API server sees it: accepted whole, restricted Pod Security without a
warning, and its parts agreeing with each other."""

from __future__ import annotations

import copy
import subprocess

from tests.deploy import manifests
from tests.deploy.conftest import Install


def _apply_dry_run(install: Install, *args: str, stdin: str | None = None) -> tuple[str, str]:
    result = subprocess.run(
        [*install.kubectl, "apply", "--server-side", "--dry-run=server", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stderr


def _kubectl_name(doc: manifests.Doc) -> str:
    """How kubectl names an object in its output: deployment.apps/NAME, service/NAME."""
    group = doc["apiVersion"].rpartition("/")[0]
    kind = f"{doc['kind'].lower()}.{group}" if group else doc["kind"].lower()
    return f"{kind}/{doc['metadata']['name']}"


def test_the_namespace_enforces_and_warns_restricted(install: Install) -> None:
    labels = manifests.one(install.docs, "Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"


def test_the_whole_base_is_accepted_by_the_api_server_without_a_warning(install: Install) -> None:
    out, err = _apply_dry_run(install, "-k", str(install.overlay))
    applied = {line.split()[0] for line in out.splitlines()}
    assert applied == {_kubectl_name(doc) for doc in install.docs}, out
    # kubectl prints the API server's warnings (Pod Security among them) on stderr.
    assert err == "", err


def test_a_pod_that_breaks_the_restricted_profile_is_warned_about(install: Install) -> None:
    """The check above can fail: the same Deployment, allowed to escalate privileges, is
    rejected by the namespace's enforce label, and warned about by its warn label."""
    deployment = copy.deepcopy(manifests.one(install.docs, "Deployment"))
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    container["securityContext"]["allowPrivilegeEscalation"] = True
    _, err = _apply_dry_run(install, "-f", "-", stdin=manifests.to_yaml([deployment]))
    assert 'would violate PodSecurity "restricted:latest"' in err
    assert "allowPrivilegeEscalation != false" in err


def _port_number(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def test_probes_ask_the_health_port_the_service_serves_grpc_and_metrics(install: Install) -> None:
    container = manifests.container(install.docs)
    env = manifests.container_env(install.docs)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["grpc"] == _port_number(env["K8SAILOR_LISTEN"])
    assert ports["health"] == _port_number(env["K8SAILOR_HEALTH_LISTEN"])
    for probe in (container["readinessProbe"], container["livenessProbe"]):
        assert probe["grpc"]["port"] == ports["health"]
    assert container["readinessProbe"]["grpc"]["service"] == "k8sailor.v1.ExposureService"

    assert ports["metrics"] == _port_number(env["K8SAILOR_METRICS_LISTEN"])
    service_ports = manifests.one(install.docs, "Service")["spec"]["ports"]
    grpc_port = next(port for port in service_ports if port["name"] == "grpc")
    assert grpc_port["appProtocol"] == "grpc"
    assert grpc_port["targetPort"] == "grpc"
    assert {port["targetPort"] for port in service_ports} == {"grpc", "metrics"}


def test_the_network_policy_admits_the_service_ports_and_no_other(install: Install) -> None:
    policy = manifests.one(install.docs, "NetworkPolicy")
    admitted = {port["port"] for rule in policy["spec"]["ingress"] for port in rule["ports"]}
    served = {
        port["targetPort"] for port in manifests.one(install.docs, "Service")["spec"]["ports"]
    }
    assert admitted == served
    assert all("from" not in rule for rule in policy["spec"]["ingress"])


def test_the_pod_outlives_its_drain(install: Install) -> None:
    """SIGTERM comes after the preStop sleep; the drain may take --grace; the kubelet must not
    kill the pod before both are over."""
    spec = manifests.one(install.docs, "Deployment")["spec"]["template"]["spec"]
    container = manifests.container(install.docs)
    sleep = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = float(manifests.container_env(install.docs)["K8SAILOR_GRACE"])
    assert spec["terminationGracePeriodSeconds"] > sleep + grace
