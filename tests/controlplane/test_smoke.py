"""Smoke tests: the local control plane behaves like the API server of a real cluster."""

from __future__ import annotations

import ipaddress
import json

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from tests.conftest import Cluster
from tests.controlplane import SERVICE_CIDR


def _service(name: str, type_: str = "ClusterIP", node_port: int | None = None) -> client.V1Service:
    return client.V1Service(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1ServiceSpec(
            type=type_,
            selector={"app": "web"},
            ports=[client.V1ServicePort(port=80, target_port=8088, node_port=node_port)],
        ),
    )


async def test_creates_a_deployment(api_client: client.ApiClient, namespace: str) -> None:
    apps = client.AppsV1Api(api_client)
    body = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1DeploymentSpec(
            selector=client.V1LabelSelector(match_labels={"app": "web"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "web"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="nginx")]),
            ),
        ),
    )
    created = await apps.create_namespaced_deployment(namespace, body)
    assert created.metadata.uid
    read = await apps.read_namespaced_deployment("web", namespace)
    assert read.spec.selector.match_labels == {"app": "web"}


async def test_cluster_ip_is_allocated_inside_the_service_cidr(
    api_client: client.ApiClient, namespace: str, cluster: Cluster
) -> None:
    core = client.CoreV1Api(api_client)
    created = await core.create_namespaced_service(namespace, _service("web"))
    address = ipaddress.ip_address(created.spec.cluster_ip)
    if cluster.local:
        assert address in ipaddress.ip_network(SERVICE_CIDR)
    else:
        assert not address.is_unspecified


async def test_a_taken_node_port_is_refused_with_422(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    first = await core.create_namespaced_service(namespace, _service("a", "NodePort", 31234))
    assert first.spec.ports[0].node_port == 31234
    with pytest.raises(ApiException) as raised:
        await core.create_namespaced_service(namespace, _service("b", "NodePort", 31234))
    assert raised.value.status == 422
    assert raised.value.body is not None
    status = json.loads(raised.value.body)
    assert status["reason"] == "Invalid"
    assert "provided port is already allocated" in status["message"]


async def test_a_missing_namespace_is_404(api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    with pytest.raises(ApiException) as raised:
        await core.create_namespaced_service("k8sailor-no-such-namespace", _service("web"))
    assert raised.value.status == 404
    assert raised.value.body is not None
    status = json.loads(raised.value.body)
    assert status["reason"] == "NotFound"
    assert status["message"] == 'namespaces "k8sailor-no-such-namespace" not found'
