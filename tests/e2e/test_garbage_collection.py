"""What a real cluster's controllers do with what k8sailor made, on the local control plane's
kube-controller-manager: the garbage collector deletes a Deployment's Services with it (through
the ownerReference k8sailor sets), and the namespace controller removes deleted namespaces."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from client import Client, Outcome
from tests import objects
from tests.e2e.conftest import SELECTOR

# How long to wait for a controller before calling it a failure: generous, because the
# garbage collector first syncs an informer for every resource type, and this is a cap on a
# wait, not a timing under test.
PATIENCE_S = 90.0


async def eventually(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while not await condition():
        assert time.monotonic() < deadline, f"{what}: still not so after {PATIENCE_S:.0f} s"
        await asyncio.sleep(0.2)


async def service_names(api_client: client.ApiClient, namespace: str) -> set[str]:
    listed = await client.CoreV1Api(api_client).list_namespaced_service(namespace)
    return {item.metadata.name for item in listed.items}


async def test_deleting_the_deployment_deletes_its_services_and_only_those(
    k8sailor: Client, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    results = [
        r async for r in k8sailor.create_services("web", ["80:8088", "#80:80"], namespace=namespace)
    ]
    assert {r.outcome for r in results} == {Outcome.CREATED}
    # A Service of nobody's, which must outlive the Deployment.
    await client.CoreV1Api(api_client).create_namespaced_service(
        namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="bystander"),
            spec=client.V1ServiceSpec(selector=SELECTOR, ports=[client.V1ServicePort(port=80)]),
        ),
    )

    await client.AppsV1Api(api_client).delete_namespaced_deployment("web", namespace)

    async def only_the_bystander_left() -> bool:
        return await service_names(api_client, namespace) == {"bystander"}

    await eventually(only_the_bystander_left, "the Deployment's Services after deleting it")


async def test_a_deleted_namespace_is_emptied_and_goes_away(api_client: client.ApiClient) -> None:
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    name = f"k8sailor-test-{uuid.uuid4().hex[:10]}"
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    await apps.create_namespaced_deployment(name, objects.deployment("web", SELECTOR))
    await core.create_namespaced_service(
        name,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1ServiceSpec(selector=SELECTOR, ports=[client.V1ServicePort(port=80)]),
        ),
    )

    await core.delete_namespace(name)

    async def gone() -> bool:
        try:
            await core.read_namespace(name)
        except ApiException as error:
            if error.status == 404:
                return True
            raise
        return False

    await eventually(gone, f"namespace {name} after deleting it")
