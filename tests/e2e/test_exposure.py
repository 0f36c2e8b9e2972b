"""CreateServices end to end: a real channel, a real grpc.aio server, a real kube-apiserver."""

from __future__ import annotations

import ipaddress
from typing import Any

import grpc
import pytest
from kubernetes_asyncio import client

from client import (
    Client,
    Outcome,
    Protocol,
    RequestFailed,
    Result,
    ServicePort,
    ServiceSpec,
    ServiceType,
)
from tests.e2e.conftest import SELECTOR
from tests.servers import k8sailor_over

FOUR_RULES = ["80:8088", "#80:80", "!31234:80:8088", "@www.example.com"]


async def collect(
    k8sailor: Client, namespace: str, rules: list[Any], **options: Any
) -> list[Result]:
    return [
        result
        async for result in k8sailor.create_services("web", rules, namespace=namespace, **options)
    ]


async def services(api_client: client.ApiClient, namespace: str) -> dict[str, Any]:
    core = client.CoreV1Api(api_client)
    listed = await core.list_namespaced_service(namespace)
    return {item.metadata.name: item for item in listed.items}


async def test_four_rules_create_four_services_as_intended(
    k8sailor: Client, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    results = await collect(k8sailor, namespace, FOUR_RULES)

    assert sorted(result.index for result in results) == [0, 1, 2, 3]
    assert all(result.outcome is Outcome.CREATED for result in results), results
    by_index = {result.index: result for result in results}
    assert ipaddress.ip_address(by_index[0].cluster_ip) in ipaddress.ip_network("10.96.0.0/16")
    assert by_index[1].cluster_ip == "None"
    assert by_index[2].ports[0].node_port == 31234
    assert by_index[3].cluster_ip == ""

    found = await services(api_client, namespace)
    assert set(found) == {result.service_name for result in results}
    uid = deployment["metadata"]["uid"]
    for result in results:
        service = found[result.service_name]
        owners = service.metadata.owner_references
        assert [(o.kind, o.name, o.uid) for o in owners] == [("Deployment", "web", uid)]
        assert service.metadata.labels["app.kubernetes.io/managed-by"] == "k8sailor"

    cluster_ip = found[by_index[0].service_name]
    assert cluster_ip.spec.type == "ClusterIP"
    assert cluster_ip.spec.selector == SELECTOR
    assert [(p.port, p.target_port, p.protocol) for p in cluster_ip.spec.ports] == [
        (80, 8088, "TCP")
    ]

    headless = found[by_index[1].service_name]
    assert headless.spec.type == "ClusterIP"
    assert headless.spec.cluster_ip == "None"
    assert headless.spec.selector == SELECTOR

    node_port = found[by_index[2].service_name]
    assert node_port.spec.type == "NodePort"
    assert [(p.port, p.target_port, p.node_port) for p in node_port.spec.ports] == [
        (80, 8088, 31234)
    ]
    assert node_port.spec.selector == SELECTOR

    external = found[by_index[3].service_name]
    assert external.spec.type == "ExternalName"
    assert external.spec.external_name == "www.example.com"
    assert not external.spec.selector
    assert not external.spec.ports


async def test_invalid_rules_are_reported_and_the_valid_ones_created(
    k8sailor: Client, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    rules = ["80:8088", "!99999:80:8088", "#!80", "", "api=81:http", "@Not_A_Host"]
    results = await collect(k8sailor, namespace, rules)

    by_index = {result.index: result for result in results}
    assert sorted(by_index) == list(range(len(rules)))
    assert {i for i, r in by_index.items() if r.outcome is Outcome.CREATED} == {0, 4}
    for index in (1, 2, 3, 5):
        assert by_index[index].outcome is Outcome.INVALID
        assert by_index[index].error.startswith(f"rule {index} "), by_index[index].error
    assert "node port 99999 is outside 30000-32767" in by_index[1].error
    assert set(await services(api_client, namespace)) == {"web", "api"}


async def test_sending_again_is_unchanged_and_a_foreign_service_is_a_conflict(
    k8sailor: Client, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    first = await collect(k8sailor, namespace, FOUR_RULES)
    assert all(result.outcome is Outcome.CREATED for result in first)

    again = await collect(k8sailor, namespace, FOUR_RULES)
    assert [r.outcome for r in sorted(again, key=lambda r: r.index)] == [Outcome.UNCHANGED] * 4
    assert {r.service_name: r.cluster_ip for r in again} == {
        r.service_name: r.cluster_ip for r in first
    }

    core = client.CoreV1Api(api_client)
    foreign = client.V1Service(
        metadata=client.V1ObjectMeta(name="mine"),
        spec=client.V1ServiceSpec(
            selector={"app": "other"}, ports=[client.V1ServicePort(port=7000)]
        ),
    )
    await core.create_namespaced_service(namespace, foreign)
    (conflict,) = await collect(k8sailor, namespace, ["mine=80:8088"])
    assert conflict.outcome is Outcome.CONFLICT
    assert 'Service "mine" already exists' in conflict.error
    untouched = await core.read_namespaced_service("mine", namespace)
    assert untouched.spec.selector == {"app": "other"}
    assert [p.port for p in untouched.spec.ports] == [7000]
    assert not untouched.metadata.owner_references


async def test_a_missing_deployment_is_not_found(k8sailor: Client, namespace: str) -> None:
    with pytest.raises(RequestFailed) as raised:
        await collect(k8sailor, namespace, ["80"])
    assert raised.value.code is grpc.StatusCode.NOT_FOUND
    assert 'Deployment "web" not found' in raised.value.details


@pytest.mark.parametrize(
    ("namespace_name", "rules", "expected"),
    [
        ("default", [], "no rules"),
        ("default", ["80"] * 257, "257 rules is more than"),
        ("Not_A_Namespace", ["80"], "is not a valid namespace name"),
    ],
)
async def test_bad_requests_are_invalid_argument(
    k8sailor: Client, namespace_name: str, rules: list[str], expected: str
) -> None:
    with pytest.raises(RequestFailed) as raised:
        await collect(k8sailor, namespace_name, rules)
    assert raised.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert expected in raised.value.details


async def test_dry_run_is_validated_by_the_api_server_and_creates_nothing(
    k8sailor: Client, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    # Only the cluster knows that node port 31234 is taken: a dry run that reports it was
    # really validated by the API server.
    core = client.CoreV1Api(api_client)
    taken = client.V1Service(
        metadata=client.V1ObjectMeta(name="taken"),
        spec=client.V1ServiceSpec(
            type="NodePort", ports=[client.V1ServicePort(port=1, node_port=31234)]
        ),
    )
    await core.create_namespaced_service(namespace, taken)

    results = await collect(k8sailor, namespace, FOUR_RULES, dry_run=True)

    by_index = {result.index: result for result in results}
    assert [by_index[i].outcome for i in (0, 1, 3)] == [Outcome.CREATED] * 3
    assert by_index[0].service_name == "web"
    assert by_index[2].outcome is Outcome.INVALID
    assert "provided port is already allocated" in by_index[2].error
    assert set(await services(api_client, namespace)) == {"taken"}


async def test_a_structured_spec_with_udp_and_a_named_target_port(
    k8sailor: Client, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    spec = ServiceSpec(
        name="resolver",
        type=ServiceType.SERVICE_TYPE_CLUSTER_IP,
        ports=[ServicePort(port=53, target_port_name="dns", protocol=Protocol.PROTOCOL_UDP)],
    )
    (result,) = await collect(k8sailor, namespace, [spec])
    assert result.outcome is Outcome.CREATED, result
    service = (await services(api_client, namespace))["resolver"]
    (port,) = service.spec.ports
    assert (port.port, port.target_port, port.protocol) == (53, "dns", "UDP")
    assert result.rule == "resolver=53:dns/udp"


async def test_a_hundred_rules_give_every_index_once_as_they_finish(
    k8sailor: Client, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    rules = [f"svc-{i}=80:{8000 + i}" for i in range(99)] + ["!1:80:80"]
    indices = [
        result.index async for result in k8sailor.create_services("web", rules, namespace=namespace)
    ]

    assert sorted(indices) == list(range(100))
    # The invalid last rule is known before any Service is created, so it comes first: results
    # stream as they are known, not in request order.
    assert indices[0] == 99
    assert indices != sorted(indices)
    assert len(await services(api_client, namespace)) == 99


async def test_an_unreachable_api_server_is_unavailable(
    namespace: str, deployment: dict[str, Any]
) -> None:
    configuration = client.Configuration(host="https://127.0.0.1:9")  # nothing listens on 9
    async with (
        client.ApiClient(configuration) as unreachable,
        k8sailor_over(unreachable) as c,
    ):
        # A deadline, as callers send: an unreachable API server is tried again until it
        # leaves no room (with none, for --max-retry-seconds).
        with pytest.raises(RequestFailed) as raised:
            _ = [
                result
                async for result in c.create_services("web", ["80"], namespace=namespace, timeout=5)
            ]
    assert raised.value.code is grpc.StatusCode.UNAVAILABLE
    assert "unreachable" in raised.value.details


async def test_an_identity_without_rights_is_permission_denied(
    cluster: Any, namespace: str, deployment: dict[str, Any]
) -> None:
    from kubernetes_asyncio import config as kube_config

    nobody = await kube_config.new_client_from_config(config_file=str(cluster.kubeconfig))
    # The admin may impersonate; "nobody" has no RBAC bindings at all.
    nobody.set_default_header("Impersonate-User", "k8sailor-test-nobody")
    async with (
        nobody,
        k8sailor_over(nobody) as c,
    ):
        with pytest.raises(RequestFailed) as raised:
            _ = [result async for result in c.create_services("web", ["80"], namespace=namespace)]
    assert raised.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert "forbidden" in raised.value.details


async def test_errors_found_while_building_point_into_what_the_caller_wrote(
    k8sailor: Client, namespace: str, deployment: dict[str, Any]
) -> None:
    spec = ServiceSpec(
        type=ServiceType.SERVICE_TYPE_CLUSTER_IP,
        name="api",
        ports=[ServicePort(port=80, target_port_name="metrics")],
    )
    results = await collect(k8sailor, namespace, ["  x = 81 : nope ", spec])
    by_index = {result.index: result for result in results}
    assert by_index[0].outcome is Outcome.INVALID
    # Column 12 is where "nope" starts in the text as sent, spaces and all.
    assert by_index[0].error.startswith('rule 0 "  x = 81 : nope ", column 12: ')
    assert 'no container port named "nope"' in by_index[0].error
    assert by_index[1].outcome is Outcome.INVALID
    assert ", ports[0].target_port: " in by_index[1].error
    assert "its named ports are dns (UDP), grpc (TCP), http (TCP)" in by_index[1].error
