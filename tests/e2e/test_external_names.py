"""ExternalName targets into the node or the cluster are refused end to end (CVE-2021-25740):
a real channel, a real grpc.aio server, a real kube-apiserver, on CreateServices and
ApplyServices, unless the operator allows the suffix."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client

from client import Client, Outcome, Result, ServiceSpec, ServiceType
from server.app import ServerConfig
from tests.servers import k8sailor_over

IN_CLUSTER = "kubernetes.default.svc.cluster.local"
RULES = ["local=@localhost", "meta=@169.254.169.254", f"api=@{IN_CLUSTER}", "db=@db.example.com"]
# How each refused rule's error begins: the column is where its host starts.
REFUSED = {
    0: 'rule 0 "local=@localhost", column 8: external name "localhost" is a loopback name',
    1: (
        'rule 1 "meta=@169.254.169.254", column 7: external name "169.254.169.254" is the IP '
        "address 169.254.169.254 (link-local: the cloud metadata service)"
    ),
    2: (
        f'rule 2 "api=@{IN_CLUSTER}", column 6: external name "{IN_CLUSTER}" is inside the '
        "cluster (the cluster domain cluster.local)"
    ),
}


async def service_names(api_client: client.ApiClient, namespace: str) -> set[str]:
    listed = await client.CoreV1Api(api_client).list_namespaced_service(namespace)
    return {item.metadata.name for item in listed.items}


async def create(k8sailor: Client, namespace: str, rules: list[Any]) -> dict[int, Result]:
    return {r.index: r async for r in k8sailor.create_services("web", rules, namespace=namespace)}


async def apply(k8sailor: Client, namespace: str, rules: list[Any]) -> dict[int, Result]:
    return {r.index: r async for r in k8sailor.apply_services("web", rules, namespace=namespace)}


@pytest.fixture
async def allowing_the_cluster(api_client: client.ApiClient) -> AsyncIterator[Client]:
    """A server started with --allow-external-name svc.cluster.local."""
    config = ServerConfig(listen="127.0.0.1:0", allow_external_names=("svc.cluster.local",))
    async with k8sailor_over(api_client, config=config) as connected:
        yield connected


def assert_refused_with_columns(results: dict[int, Result]) -> None:
    assert sorted(results) == [0, 1, 2, 3]
    for index, start in REFUSED.items():
        assert results[index].outcome is Outcome.INVALID, results[index]
        assert results[index].error.startswith(start), results[index].error


async def test_create_refuses_targets_in_the_node_and_the_cluster_and_creates_nothing_of_them(
    k8sailor: Client, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    results = await create(k8sailor, namespace, RULES)
    assert_refused_with_columns(results)
    assert results[3].outcome is Outcome.CREATED
    assert await service_names(api_client, namespace) == {"db"}

    # A structured spec is refused for the same reason, at its field.
    spec = ServiceSpec(
        name="spec", type=ServiceType.SERVICE_TYPE_EXTERNAL_NAME, external_name="LOCALHOST."
    )
    (refused,) = (await create(k8sailor, namespace, [spec])).values()
    assert refused.outcome is Outcome.INVALID
    assert refused.error.startswith(
        'rule 0 "spec=@LOCALHOST.", external_name: external name "LOCALHOST." is a loopback name'
    )
    assert await service_names(api_client, namespace) == {"db"}


async def test_apply_refuses_them_too(
    k8sailor: Client, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    results = await apply(k8sailor, namespace, RULES)
    assert_refused_with_columns(results)
    assert results[3].outcome is Outcome.CREATED
    assert await service_names(api_client, namespace) == {"db"}


async def test_an_allowed_suffix_lets_the_cluster_name_through_on_create_and_apply(
    allowing_the_cluster: Client,
    api_client: client.ApiClient,
    namespace: str,
    deployment: dict[str, Any],
) -> None:
    created = await create(allowing_the_cluster, namespace, RULES)
    assert [created[i].outcome for i in range(4)] == [
        Outcome.INVALID,
        Outcome.INVALID,
        Outcome.CREATED,
        Outcome.CREATED,
    ]
    service = await client.CoreV1Api(api_client).read_namespaced_service("api", namespace)
    assert (service.spec.type, service.spec.external_name) == ("ExternalName", IN_CLUSTER)

    applied = await apply(
        allowing_the_cluster, namespace, ["local=@localhost", f"api2=@{IN_CLUSTER}"]
    )
    assert (applied[0].outcome, applied[1].outcome) == (Outcome.INVALID, Outcome.CREATED)
    assert await service_names(api_client, namespace) == {"api", "api2", "db"}
