"""Shared pieces of the pure-layer tests: a Deployment, hypothesis strategies for rules, and an
independent transcription of the kube-apiserver's Service validation.

The validator below is deliberately written apart from server.rules (different code, regexes
copied from k8s.io/apimachinery's validation.go and the checks of ValidateService and the
node-port allocator), so that "every rule we accept builds a Service the apiserver accepts"
is checked against something other than our own code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from server.manifests import ContainerPort, Deployment
from server.rules import (
    DEFAULT_NODE_PORTS,
    NodePortRange,
    PortRule,
    Protocol,
    ServiceRule,
    ServiceType,
    port_names,
)

# For the property tests: no per-example deadline, which a busy CI machine would trip now and
# then (speed is measured by bench/, not by tests). Applied per test, not as a global profile.
relaxed = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

UID = "6a1f3e0c-2b9d-4c5e-8f7a-0123456789ab"

# Named container ports of the test Deployment; strategies draw named target ports from here
# so that generated rules can be built.
NAMED_PORTS = (
    ContainerPort("http", 8080, Protocol.TCP),
    ContainerPort("https", 8443, Protocol.TCP),
    ContainerPort("grpc", 9000, Protocol.TCP),
    ContainerPort("metrics", 9090, Protocol.TCP),
    ContainerPort("dns", 53, Protocol.UDP),
    ContainerPort("dns", 53, Protocol.TCP),
    ContainerPort("sip", 5060, Protocol.SCTP),
    ContainerPort(None, 7000, Protocol.TCP),
)


def make_deployment(
    name: str = "web",
    ports: tuple[ContainerPort, ...] = NAMED_PORTS,
    selector: Mapping[str, str] | None = None,
) -> Deployment:
    return Deployment(
        name=name,
        namespace="shop",
        uid=UID,
        selector=dict(selector or {"app.kubernetes.io/name": name, "tier": "frontend"}),
        container_ports=ports,
    )


def deployment_for(rule: ServiceRule) -> Deployment:
    """A Deployment that has every named port the rule targets, with its protocol."""
    ports = tuple(
        ContainerPort(p.target_port, 1000 + i, p.protocol)
        for i, p in enumerate(rule.ports)
        if isinstance(p.target_port, str)
    )
    return make_deployment(ports=ports)


# --------------------------------------------------------------------------------------------
# The apiserver's rules, transcribed (Go's regexp "^...$" is Python's fullmatch).

DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


def is_dns1123_label(value: str) -> bool:
    return len(value) <= 63 and DNS1123_LABEL.fullmatch(value) is not None


def is_dns1123_subdomain(value: str) -> bool:
    return len(value) <= 253 and DNS1123_SUBDOMAIN.fullmatch(value) is not None


def is_dns1035_label(value: str) -> bool:
    return len(value) <= 63 and DNS1035_LABEL.fullmatch(value) is not None


def is_valid_port_name(value: str) -> bool:
    """IsValidPortName: an IANA_SVC_NAME."""
    return (
        len(value) <= 15
        and re.fullmatch(r"[-a-z0-9]+", value) is not None
        and re.search(r"[a-z]", value) is not None
        and "--" not in value
        and not value.startswith("-")
        and not value.endswith("-")
    )


def is_qualified_name(value: str) -> bool:
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix or not is_dns1123_subdomain(prefix):
            return False
    else:
        return False
    return 0 < len(name) <= 63 and QUALIFIED_NAME.fullmatch(name) is not None


def apiserver_errors(
    service: Mapping[str, Any], node_ports: NodePortRange = DEFAULT_NODE_PORTS
) -> list[str]:
    """What kube-apiserver would refuse in this Service on create (empty list: nothing)."""
    errors: list[str] = []
    meta = service["metadata"]
    if not is_dns1035_label(meta["name"]):
        errors.append("metadata.name")
    annotations = meta.get("annotations") or {}
    if sum(len(k) + len(v) for k, v in annotations.items()) > 256 * 1024:
        errors.append("metadata.annotations: too long")
    for key, value in (meta.get("labels") or {}).items():
        if not is_qualified_name(key) or len(value) > 63 or not LABEL_VALUE.fullmatch(value):
            errors.append(f"metadata.labels[{key}]")
    spec = service["spec"]
    kind = spec.get("type", "ClusterIP")
    ports = spec.get("ports") or []
    headless = spec.get("clusterIP") == "None"
    if kind not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        errors.append("spec.type")
    if not ports and not headless and kind != "ExternalName":
        errors.append("spec.ports: Required value")
    if headless and kind in ("NodePort", "LoadBalancer"):
        errors.append("spec.clusterIPs[0]: may not be None")
    if kind == "ExternalName":
        cname = spec.get("externalName", "")
        cname = cname.removesuffix(".")  # the apiserver allows a trailing dot
        if not cname or not is_dns1123_subdomain(cname):
            errors.append("spec.externalName")
    names: set[str] = set()
    for i, port in enumerate(ports):
        name = port.get("name", "")
        if len(ports) > 1 and not name:
            errors.append(f"spec.ports[{i}].name: Required value")
        elif name:
            if not is_dns1123_label(name):
                errors.append(f"spec.ports[{i}].name")
            if name in names:
                errors.append(f"spec.ports[{i}].name: Duplicate value")
            names.add(name)
        if not 1 <= port["port"] <= 65535:
            errors.append(f"spec.ports[{i}].port")
        if port.get("protocol") not in ("TCP", "UDP", "SCTP"):
            errors.append(f"spec.ports[{i}].protocol")
        target = port.get("targetPort")
        if isinstance(target, int):
            if not 1 <= target <= 65535:
                errors.append(f"spec.ports[{i}].targetPort")
        elif not isinstance(target, str) or not is_valid_port_name(target):
            errors.append(f"spec.ports[{i}].targetPort")
        if "appProtocol" in port and not is_qualified_name(port["appProtocol"]):
            errors.append(f"spec.ports[{i}].appProtocol")
        if "nodePort" in port:
            if kind == "ClusterIP":
                errors.append(f"spec.ports[{i}].nodePort: may not be used")
            elif not node_ports.low <= port["nodePort"] <= node_ports.high:
                errors.append(f"spec.ports[{i}].nodePort: not in range")
    seen_node: set[tuple[str, int]] = set()
    seen_port: set[tuple[str, int]] = set()
    for i, port in enumerate(ports):
        if "nodePort" in port:
            key = (port.get("protocol", "TCP"), port["nodePort"])
            if key in seen_node:
                errors.append(f"spec.ports[{i}].nodePort: Duplicate value")
            seen_node.add(key)
        key = (port.get("protocol", "TCP"), port["port"])
        if key in seen_port:
            errors.append(f"spec.ports[{i}]: Duplicate value")
        seen_port.add(key)
    # The node-port allocator (initNodePorts) allocates a requested node port once per service
    # port number; the same node port under two port numbers is "already allocated".
    owner_of_node: dict[int, int] = {}
    for i, port in enumerate(ports):
        node = port.get("nodePort")
        if node is None:
            continue
        if node in owner_of_node and owner_of_node[node] != port["port"]:
            errors.append(f"spec.ports[{i}].nodePort: provided port is already allocated")
        owner_of_node.setdefault(node, port["port"])
    selector = spec.get("selector") or {}
    for key, value in selector.items():
        if not is_qualified_name(key) or len(value) > 63 or not LABEL_VALUE.fullmatch(value):
            errors.append(f"spec.selector[{key}]")
    return errors


# --------------------------------------------------------------------------------------------
# Strategies for valid rules.

dns1035_names = st.from_regex(r"[a-z]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)
port_label_names = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,14}[a-z0-9])?", fullmatch=True)
iana_names = st.from_regex(r"[a-z0-9]{1,5}(-[a-z0-9]{1,4}){0,2}", fullmatch=True).filter(
    is_valid_port_name
)
subdomains = st.lists(
    st.from_regex(r"[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True), min_size=1, max_size=4
).map(".".join)
# ExternalName targets: labels under a top-level domain, since server.rules.targets refuses
# names without a dot, numeric last labels and special-use or cluster domains.
external_hosts = st.tuples(
    subdomains, st.sampled_from(["com", "net", "io", "example", "xn--p1ai"])
).map(".".join)
app_protocols = st.sampled_from(
    [
        "http",
        "https",
        "http2",
        "grpc",
        "grpc-web",
        "tcp",
        "udp",
        "tls",
        "upd",
        "kubernetes.io/h2c",
        "kubernetes.io/ws",
        "kubernetes.io/wss",
        "H2C",
        "GRPC",
        "example.com/My_Proto.v1",
        "udp/x",
        "tcp.example.com/x",
        "a",
    ]
) | st.from_regex(r"[a-z][-a-z0-9_.]{0,10}[a-z0-9]", fullmatch=True)


ANY_TYPE: st.SearchStrategy[ServiceType] = st.sampled_from(ServiceType)
ANY_PROTOCOL: st.SearchStrategy[Protocol] = st.sampled_from(Protocol)


@st.composite
def service_rules(
    draw: st.DrawFn,
    types: st.SearchStrategy[ServiceType] = ANY_TYPE,
    node_ports: NodePortRange = DEFAULT_NODE_PORTS,
    *,
    protocols: st.SearchStrategy[Protocol] = ANY_PROTOCOL,
    named_targets: bool = True,
    app_protocol: bool = True,
    port_name: bool = True,
    max_numbers: int = 4,
    node_port_per_number: bool = True,
) -> ServiceRule:
    """A structured rule that should pass check_rule: distinct (port, protocol) pairs, node
    ports only on NodePort/LoadBalancer rules and shared only by one port number."""
    rtype = draw(types)
    name = draw(st.none() | dns1035_names)
    if rtype is ServiceType.EXTERNAL_NAME:
        return ServiceRule(rtype, (), name, draw(external_hosts))
    numbers = draw(st.lists(st.integers(1, 65535), min_size=1, max_size=max_numbers, unique=True))
    nodes = draw(
        st.lists(
            st.integers(node_ports.low, node_ports.high),
            min_size=len(numbers),
            max_size=len(numbers),
            unique=True,
        )
    )
    targets: st.SearchStrategy[int | str] = st.integers(1, 65535)
    if named_targets:
        targets = targets | st.sampled_from([cp.name for cp in NAMED_PORTS if cp.name])
    ports = []
    for number, node in zip(numbers, nodes, strict=True):
        with_node = (
            rtype in (ServiceType.NODE_PORT, ServiceType.LOAD_BALANCER)
            and node_port_per_number
            and draw(st.booleans())
        )
        for protocol in draw(st.lists(protocols, min_size=1, max_size=3, unique=True)):
            ports.append(
                PortRule(
                    port=number,
                    target_port=draw(targets),
                    protocol=protocol,
                    node_port=node if with_node else None,
                    app_protocol=draw(st.none() | app_protocols) if app_protocol else None,
                    name=draw(st.none() | port_label_names) if port_name else None,
                )
            )
    rule = ServiceRule(rtype, tuple(ports), name)
    names = port_names(rule)
    if len(set(names)) != len(names):
        # Explicit names that clash: drop them rather than filter the example away.
        rule = ServiceRule(rtype, tuple(PortRule(**_fields(p), name=None) for p in ports), name)
    return rule


def _fields(p: PortRule) -> dict[str, Any]:
    return {
        "port": p.port,
        "target_port": p.target_port,
        "protocol": p.protocol,
        "node_port": p.node_port,
        "app_protocol": p.app_protocol,
    }


# Text that looks like rules: the characters of the grammar, some words, some numbers. Finds far
# more of the parser's paths than arbitrary Unicode does.
rule_like_text = st.lists(
    st.sampled_from(
        [
            "80",
            "8080",
            "0",
            "65535",
            "65536",
            "31234",
            "99999",
            "007",
            "http",
            "HTTP",
            "a--b",
            "udp",
            "UDP",
            "tcp",
            "sctp",
            "upd",
            "grpc",
            "h2c",
            "example.com",
            "db.example.com",
            "web",
            "9web",
            ":",
            ",",
            "/",
            "#",
            "!",
            "^",
            "@",
            "=",
            "(",
            ")",
            " ",
            "\t",
            "-",
            ".",
            "é",
        ]
    ),
    max_size=12,
).map("".join)
