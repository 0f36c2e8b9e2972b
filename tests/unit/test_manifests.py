"""server.manifests: rule + Deployment -> Service manifest, and the comparisons the server uses."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain import pointing
from server.kube.services import owned_by, same_service
from server.manifests import (
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    RULE_ANNOTATION,
    ContainerPort,
    Deployment,
    DeploymentError,
    build_service,
    build_services,
    service_name,
)
from server.rules import (
    PortRule,
    Protocol,
    RuleError,
    ServiceRule,
    ServiceType,
    check_rule,
    parse_rule,
)
from tests.unit.conftest import (
    UID,
    apiserver_errors,
    deployment_for,
    make_deployment,
    relaxed,
    rule_like_text,
    service_rules,
)

SELECTOR = {"app.kubernetes.io/name": "web", "tier": "frontend"}


def build(text: str, deployment: Deployment | None = None) -> dict[str, Any]:
    """Build as the exposer does: an error at a field path points at the text's column."""
    try:
        return build_service(parse_rule(text, 0), deployment or make_deployment(), 0)
    except RuleError as error:
        raise pointing.at_column(error, text) from error


def build_all(
    rules: list[ServiceRule | RuleError], texts: list[str]
) -> list[dict[str, Any] | RuleError]:
    return [
        pointing.at_column(built, texts[index]) if isinstance(built, RuleError) else built
        for index, built in enumerate(build_services(rules, make_deployment()))
    ]


def test_full_manifest() -> None:
    assert build("!31234:80:http/grpc") == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "web-nodeport",
            "namespace": "shop",
            "labels": {"app.kubernetes.io/managed-by": "k8sailor"},
            "annotations": {"k8sailor.io/rule": "!31234:80:http/grpc"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": "web",
                    "uid": UID,
                    "controller": True,
                }
            ],
        },
        "spec": {
            "type": "NodePort",
            "selector": SELECTOR,
            "ports": [
                {
                    "name": "80-http",
                    "protocol": "TCP",
                    "port": 80,
                    "targetPort": "http",
                    "nodePort": 31234,
                    "appProtocol": "grpc",
                }
            ],
        },
    }


def _port(
    name: str,
    port: int,
    target: int | str,
    protocol: str = "TCP",
    **extra: Any,
) -> dict[str, Any]:
    return {"name": name, "protocol": protocol, "port": port, "targetPort": target, **extra}


# (rule, Service name, spec) for every row of the table, and then some.
BUILT: list[tuple[str, str, dict[str, Any]]] = [
    ("80", "web", {"type": "ClusterIP", "ports": [_port("80-80", 80, 80)]}),
    ("80:8088", "web", {"type": "ClusterIP", "ports": [_port("80-8088", 80, 8088)]}),
    (
        "#80:80",
        "web-headless",
        {"type": "ClusterIP", "clusterIP": "None", "ports": [_port("80-80", 80, 80)]},
    ),
    ("!80:8088", "web-nodeport", {"type": "NodePort", "ports": [_port("80-8088", 80, 8088)]}),
    (
        "!31234:80:8088",
        "web-nodeport",
        {"type": "NodePort", "ports": [_port("80-8088", 80, 8088, nodePort=31234)]},
    ),
    ("^80:8080", "web-lb", {"type": "LoadBalancer", "ports": [_port("80-8080", 80, 8080)]}),
    (
        "^31000:80:8080",
        "web-lb",
        {"type": "LoadBalancer", "ports": [_port("80-8080", 80, 8080, nodePort=31000)]},
    ),
    ("80:http", "web", {"type": "ClusterIP", "ports": [_port("80-http", 80, "http")]}),
    ("53:53/udp", "web", {"type": "ClusterIP", "ports": [_port("53-53", 53, 53, "UDP")]}),
    (
        "5060:sip/sctp",
        "web",
        {"type": "ClusterIP", "ports": [_port("5060-sip", 5060, "sip", "SCTP")]},
    ),
    (
        "80:8080/grpc",
        "web",
        {"type": "ClusterIP", "ports": [_port("80-8080", 80, 8080, appProtocol="grpc")]},
    ),
    (
        "80:8080/h2c",
        "web",
        {
            "type": "ClusterIP",
            "ports": [_port("80-8080", 80, 8080, appProtocol="kubernetes.io/h2c")],
        },
    ),
    (
        "80:8080,443:8443",
        "web",
        {"type": "ClusterIP", "ports": [_port("80-8080", 80, 8080), _port("443-8443", 443, 8443)]},
    ),
    (
        "^80:8080,443:https",
        "web-lb",
        {
            "type": "LoadBalancer",
            "ports": [_port("80-8080", 80, 8080), _port("443-https", 443, "https")],
        },
    ),
    ("admin=!80:9090", "admin", {"type": "NodePort", "ports": [_port("80-9090", 80, 9090)]}),
    (
        "dns=53:dns/udp,53:dns",
        "dns",
        {
            "type": "ClusterIP",
            "ports": [_port("53-dns-udp", 53, "dns", "UDP"), _port("53-dns-tcp", 53, "dns")],
        },
    ),
    (
        "80:8080(web)",
        "web",
        {"type": "ClusterIP", "ports": [_port("web", 80, 8080)]},
    ),
]


@pytest.mark.parametrize(("text", "name", "spec"), BUILT, ids=[b[0] for b in BUILT])
def test_built_service(text: str, name: str, spec: dict[str, Any]) -> None:
    manifest = build(text)
    assert manifest["metadata"]["name"] == name
    assert manifest["metadata"]["annotations"] == {RULE_ANNOTATION: parse_rule(text, 0).canonical()}
    assert manifest["metadata"]["labels"] == {MANAGED_BY_LABEL: MANAGED_BY_VALUE}
    assert manifest["spec"] == {"selector": SELECTOR, **spec}
    assert apiserver_errors(manifest) == []


def test_external_name_service_has_no_selector_and_no_ports() -> None:
    manifest = build("@db.example.com")
    assert manifest["metadata"]["name"] == "web-external"
    assert manifest["spec"] == {"type": "ExternalName", "externalName": "db.example.com"}
    assert manifest["metadata"]["ownerReferences"][0]["uid"] == UID


def test_manifests_share_no_mutable_parts() -> None:
    deployment = make_deployment()
    first = build("80", deployment)
    second = build("81:81", deployment)
    first["spec"]["selector"]["x"] = "y"
    first["metadata"]["labels"]["x"] = "y"
    assert "x" not in second["spec"]["selector"]
    assert "x" not in second["metadata"]["labels"]
    assert "x" not in deployment.selector


@pytest.mark.parametrize(
    ("rtype", "expected"),
    [
        (ServiceType.CLUSTER_IP, "web"),
        (ServiceType.HEADLESS, "web-headless"),
        (ServiceType.NODE_PORT, "web-nodeport"),
        (ServiceType.LOAD_BALANCER, "web-lb"),
        (ServiceType.EXTERNAL_NAME, "web-external"),
    ],
)
def test_service_name_is_derived_from_the_deployment(rtype: ServiceType, expected: str) -> None:
    assert service_name(ServiceRule(rtype), "web") == expected
    assert service_name(ServiceRule(rtype, name="mine"), "web") == "mine"


@pytest.mark.parametrize(
    ("deployment_name", "text", "message"),
    [
        (
            "1web",
            "80",
            'the Service name "1web" derived from deployment "1web" is not a valid DNS-1035 '
            "label: it must start with a letter; give the rule a name, as in my-service=80",
        ),
        (
            "web.v2",
            "!80",
            'the Service name "web.v2-nodeport" derived from deployment "web.v2" is not a valid '
            "DNS-1035 label: it contains \".\"; only a-z, 0-9 and '-' are allowed; give the rule a "
            "name, as in my-service=!80",
        ),
        (
            "a" * 55,
            "!80",
            f'the Service name "{"a" * 55}-nodeport" derived from deployment "{"a" * 55}" is not '
            "a valid DNS-1035 label: it is 64 characters long, more than 63; give the rule a "
            "name, as in my-service=!80",
        ),
    ],
)
def test_invalid_derived_name_is_refused(deployment_name: str, text: str, message: str) -> None:
    deployment = make_deployment(deployment_name)
    with pytest.raises(RuleError) as caught:
        build(text, deployment)
    assert (caught.value.index, caught.value.text, caught.value.message) == (0, text, message)
    assert (caught.value.where, caught.value.column) == ("", None)
    # A structured spec gets a field path instead: where to put the name.
    with pytest.raises(RuleError) as caught:
        build_service(parse_rule(text, 0), deployment, 5)
    assert (caught.value.where, caught.value.text) == ("name", parse_rule(text, 0).canonical())
    # With a name of its own, the same rule is fine.
    assert build_service(parse_rule("ok=" + text, 0), deployment, 5)["metadata"]["name"] == "ok"


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        (
            "80:admin",
            4,
            'deployment "web" has no container port named "admin"; its named ports are '
            "dns (TCP), dns (UDP), grpc (TCP), http (TCP), https (TCP), metrics (TCP), sip (SCTP)",
        ),
        (
            "80:8080, 81 : sip",
            15,
            'container port "sip" of deployment "web" is SCTP, not TCP; '
            "give the protocol, as in 81:sip/sctp",
        ),
        (
            "9090:metrics/udp",
            6,
            'container port "metrics" of deployment "web" is TCP, not UDP; '
            "give the protocol, as in 9090:metrics/tcp",
        ),
    ],
)
def test_named_target_port_must_exist(text: str, column: int, message: str) -> None:
    with pytest.raises(RuleError) as caught:
        build(text)
    assert (caught.value.message, caught.value.column) == (message, column)
    assert str(caught.value) == f'rule 0 "{text}", column {column}: {message}'


def test_named_target_port_of_a_deployment_without_named_ports() -> None:
    deployment = make_deployment(ports=(ContainerPort(None, 8080, Protocol.TCP),))
    rule = check_rule(ServiceRule(ServiceType.CLUSTER_IP, (PortRule(80, "http"),)), 2)
    with pytest.raises(RuleError) as caught:
        build_service(rule, deployment, 2)
    assert caught.value.where == "ports[0].target_port"
    assert caught.value.message == (
        'deployment "web" has no container port named "http"; it has no named container ports'
    )


def test_rule_too_long_for_an_annotation() -> None:
    ports = tuple(PortRule(i, i, name=f"p{i}-" + "a" * 55) for i in range(1, 4001))
    rule = ServiceRule(ServiceType.CLUSTER_IP, ports)
    with pytest.raises(RuleError, match="too long to record in an annotation"):
        build_service(rule, make_deployment(), 0)


# --------------------------------------------------------------------------------------------
# Several rules of one request.


def test_build_services_keeps_order_passes_errors_and_refuses_name_clashes() -> None:
    texts = ["80", "bad", "81:8081", "api=!80", "api=82", "#80", "82:admin", "83"]
    parsed: list[ServiceRule | RuleError] = []
    for i, text in enumerate(texts):
        try:
            parsed.append(parse_rule(text, i))
        except RuleError as e:
            parsed.append(e)
    results = build_all(parsed, texts)
    assert len(results) == len(texts)
    assert results[1] is parsed[1]
    names = [r["metadata"]["name"] if isinstance(r, dict) else None for r in results]
    assert names == ["web", None, None, "api", None, "web-headless", None, None]
    clash = results[2]
    assert isinstance(clash, RuleError)
    assert (clash.index, clash.text, clash.where) == (2, "81:8081", "")
    assert clash.message == (
        'rule 0 already makes a Service named "web"; give this one its own name, '
        "as in web-2=81:8081"
    )
    explicit = results[4]
    assert isinstance(explicit, RuleError)
    assert (explicit.column, explicit.message) == (
        1,
        'rule 3 already makes a Service named "api"; give this one its own name, as in api-4=82',
    )
    missing = results[6]
    assert isinstance(missing, RuleError)
    assert missing.message.startswith('deployment "web" has no container port named "admin"')
    # Rule 6 failed, but "web" was rule 0's anyway.
    assert isinstance(results[7], RuleError)


def test_build_services_without_texts_names_fields() -> None:
    specs: list[ServiceRule | RuleError] = [
        ServiceRule(ServiceType.CLUSTER_IP, (PortRule(80, 80),)),
        ServiceRule(ServiceType.CLUSTER_IP, (PortRule(81, 81),)),
    ]
    results = build_services(specs, make_deployment())
    assert isinstance(results[0], dict)
    error = results[1]
    assert isinstance(error, RuleError)
    assert (error.where, error.text) == ("name", "81")
    assert str(error) == (
        'rule 1 "81", name: rule 0 already makes a Service named "web"; '
        "give this one its own name, as in web-1=81"
    )


def test_a_failed_rule_leaves_its_name_free() -> None:
    texts = ["80:admin", "80"]
    results = build_all([parse_rule(t, i) for i, t in enumerate(texts)], texts)
    assert isinstance(results[0], RuleError)
    assert isinstance(results[1], dict)


# --------------------------------------------------------------------------------------------
# Reading the Deployment.


def deployment_json(**spec_changes: Any) -> dict[str, Any]:
    """A Deployment as the apiserver returns it (trimmed of what we do not read)."""
    obj: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "uid": UID,
            "resourceVersion": "4711",
            "labels": {"app": "web"},
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "web"}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "web"}},
                "spec": {
                    "initContainers": [
                        {
                            "name": "migrate",
                            "image": "m",
                            "ports": [{"name": "init", "containerPort": 1}],
                        },
                        {
                            "name": "proxy",
                            "image": "p",
                            "restartPolicy": "Always",
                            "ports": [{"name": "proxy", "containerPort": 15001, "protocol": "TCP"}],
                        },
                    ],
                    "containers": [
                        {
                            "name": "app",
                            "image": "a",
                            "ports": [
                                {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                                {"containerPort": 9090},
                                {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                            ],
                        },
                        {"name": "side", "image": "s"},
                    ],
                },
            },
        },
        "status": {"replicas": 2},
    }
    obj["spec"].update(spec_changes)
    return obj


def test_deployment_from_manifest() -> None:
    deployment = Deployment.from_manifest(deployment_json())
    assert (deployment.name, deployment.namespace, deployment.uid) == ("web", "shop", UID)
    assert deployment.selector == {"app.kubernetes.io/name": "web"}
    # Ports of containers and of sidecars (restartPolicy Always), not of plain init containers.
    assert deployment.container_ports == (
        ContainerPort("http", 8080, Protocol.TCP),
        ContainerPort(None, 9090, Protocol.TCP),
        ContainerPort("dns", 53, Protocol.UDP),
        ContainerPort("proxy", 15001, Protocol.TCP),
    )
    assert build("15001:proxy", deployment)["spec"]["ports"][0]["targetPort"] == "proxy"
    with pytest.raises(RuleError):
        build("1:init", deployment)


def test_single_value_in_expression_becomes_a_label() -> None:
    selector = {
        "matchLabels": {"app": "web"},
        "matchExpressions": [{"key": "track", "operator": "In", "values": ["stable"]}],
    }
    deployment = Deployment.from_manifest(deployment_json(selector=selector))
    assert deployment.selector == {"app": "web", "track": "stable"}


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        (
            {"matchExpressions": [{"key": "app", "operator": "In", "values": ["a", "b"]}]},
            'deployment "web" selects its pods only with matchExpressions (app In [a, b]), which '
            "a Service cannot express: a Service selects by exact labels. Give the Deployment a "
            "matchLabels selector.",
        ),
        (
            {
                "matchLabels": {"app": "web"},
                "matchExpressions": [
                    {"key": "track", "operator": "NotIn", "values": ["canary"]},
                    {"key": "tier", "operator": "Exists"},
                ],
            },
            'deployment "web" selects its pods with matchExpressions (track NotIn [canary]; '
            "tier Exists), which a Service cannot express: a Service selects by exact labels. "
            "Give the Deployment a matchLabels selector.",
        ),
        (
            {
                "matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "app", "operator": "In", "values": ["api"]}],
            },
            'deployment "web" has a selector that matches no pod: matchLabels say app=web and '
            "matchExpressions say app=api",
        ),
        (
            {},
            'deployment "web" has no matchLabels in its selector, so a Service would select '
            "every pod in the namespace",
        ),
    ],
)
def test_selector_a_service_cannot_express_is_refused(
    selector: dict[str, Any], message: str
) -> None:
    with pytest.raises(DeploymentError) as caught:
        Deployment.from_manifest(deployment_json(selector=selector))
    assert str(caught.value) == caught.value.message == message


@pytest.mark.parametrize("missing", ["name", "namespace", "uid"])
def test_deployment_without_identity_is_refused(missing: str) -> None:
    obj = deployment_json()
    del obj["metadata"][missing]
    with pytest.raises(DeploymentError, match=rf"^the Deployment has no metadata\.{missing}$"):
        Deployment.from_manifest(obj)
    with pytest.raises(DeploymentError, match=r"^the Deployment has no metadata$"):
        Deployment.from_manifest({"spec": {}})


# --------------------------------------------------------------------------------------------
# Comparing with what the apiserver has.


def as_read_back(desired: dict[str, Any]) -> dict[str, Any]:
    """desired as the apiserver returns it after create: defaults and allocations filled in."""
    existing = copy.deepcopy(desired)
    existing["metadata"].update(
        uid="0000-svc",
        resourceVersion="12",
        creationTimestamp="2026-01-01T00:00:00Z",
        managedFields=[{"manager": "k8sailor"}],
    )
    spec = existing["spec"]
    if spec["type"] != "ExternalName":
        spec.setdefault("clusterIP", "10.96.0.17")
        spec["clusterIPs"] = [spec["clusterIP"]]
        spec.update(
            ipFamilies=["IPv4"],
            ipFamilyPolicy="SingleStack",
            sessionAffinity="None",
            internalTrafficPolicy="Cluster",
        )
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec["externalTrafficPolicy"] = "Cluster"
        for i, port in enumerate(spec["ports"]):
            port.setdefault("nodePort", 30100 + i)
    if spec["type"] == "LoadBalancer":
        spec["allocateLoadBalancerNodePorts"] = True
    existing["status"] = {"loadBalancer": {}}
    return existing


@pytest.mark.parametrize(
    "text",
    [
        "80",
        "#80:http",
        "!80:8080",
        "!31234:80:8080",
        "^80/grpc,443:https",
        "@db.example.com",
        "53/udp,53",
    ],
)
def test_same_service_ignores_what_the_apiserver_fills_in(text: str) -> None:
    desired = build(text)
    assert same_service(as_read_back(desired), desired)
    assert owned_by(as_read_back(desired), UID)


def _change(path: str, value: Any) -> Any:
    def apply(service: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = service
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value

    return apply


@pytest.mark.parametrize(
    ("text", "path", "value"),
    [
        ("80", "spec.type", "NodePort"),
        ("80", "spec.selector", {"app": "other"}),
        ("80", "spec.ports.0.port", 81),
        ("80", "spec.ports.0.targetPort", "http"),
        ("80", "spec.ports.0.protocol", "UDP"),
        ("80", "spec.ports.0.name", "web"),
        ("80", "spec.ports.0.appProtocol", "grpc"),
        ("80/grpc", "spec.ports.0.appProtocol", KeyError),
        ("80", "spec.ports", []),
        ("80", "spec.clusterIP", "None"),
        ("#80", "spec.clusterIP", "10.96.0.3"),
        ("!31234:80:80", "spec.ports.0.nodePort", 31235),
        ("@db.example.com", "spec.externalName", "db2.example.com"),
        ("80", "metadata.ownerReferences", []),
        ("80", "metadata.ownerReferences.0.uid", "someone-else"),
    ],
)
def test_same_service_notices_a_difference(text: str, path: str, value: Any) -> None:
    desired = build(text)
    existing = as_read_back(desired)
    _change(path, value)(existing)
    assert not same_service(existing, desired)


def test_same_service_with_defaults_left_out() -> None:
    desired = build("80")
    existing = as_read_back(desired)
    del existing["spec"]["ports"][0]["targetPort"]
    del existing["spec"]["ports"][0]["protocol"]
    del existing["spec"]["type"]
    assert same_service(existing, desired)


def test_owned_by() -> None:
    existing = as_read_back(build("80"))
    assert owned_by(existing, UID)
    assert not owned_by(existing, "other")
    assert not owned_by({"metadata": {}}, UID)


# --------------------------------------------------------------------------------------------
# Properties: every accepted rule builds a Service the apiserver would accept.


@relaxed
@given(service_rules())
def test_every_checked_spec_builds_a_valid_service(spec: ServiceRule) -> None:
    rule = check_rule(spec, 0)
    manifest = build_service(rule, deployment_for(rule), 0)
    assert apiserver_errors(manifest) == []
    assert manifest["metadata"]["annotations"][RULE_ANNOTATION] == rule.canonical()
    assert len(manifest["spec"].get("ports", [])) == len(rule.ports)


@relaxed
@given(st.text(max_size=40) | rule_like_text)
def test_every_accepted_text_rule_builds_a_valid_service(text: str) -> None:
    try:
        rule = parse_rule(text, 0)
    except RuleError:
        return
    manifest = build_service(rule, deployment_for(rule), 0)
    assert apiserver_errors(manifest) == []
