"""ApplyServices and DeleteServices when the Service changes between the read and the write, on
the real API server: someone else's Service made right after our read found none, ours changed,
deleted or replaced right after we read it. The race is made to happen every time at the one
seam where the Service is read (Kube.read_service, which the flow calls before it writes). The
flows are driven directly, with the caller's rights as the plain data server.auth would hand
them (Grants), so that a right can also be made impossible to ask."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

import pytest
from kubernetes_asyncio import client

from server.auth.rights import Grant, Grants, RightsUnknown
from server.domain.lifecycle import Lifecycle
from server.domain.lifecycle_requests import ApplyRequest, DeleteRequest
from server.domain.lifecycle_results import ApplyResult, DeleteResult
from server.domain.outcomes import Outcome
from server.domain.settings import Settings
from server.kube import Kube
from server.kube.errors import KubeNotFound
from server.manifests import MANAGED_BY_LABEL
from server.rules import ServiceType
from tests.e2e.test_lifecycle import FOREIGN_SELECTOR, foreign_service

# What happens to the cluster right after a read of the Service: given what the read saw
# (None: not found).
Meddle = Callable[[dict[str, Any] | None], Awaitable[None]]


class MeddledKube(Kube):
    """The real adapter, except that the first read of a Service is followed, before its
    answer reaches the flow, by what `meddle` does to the cluster."""

    def __init__(self, api: client.ApiClient, meddle: Meddle) -> None:
        super().__init__(api, max_in_flight=8)
        self._meddle: Meddle | None = meddle
        self.reads = 0

    async def read_service(self, namespace: str, name: str, *, timeout: float | None) -> Any:
        self.reads += 1
        meddle, self._meddle = self._meddle, None
        try:
            service = await super().read_service(namespace, name, timeout=timeout)
        except KubeNotFound:
            if meddle is not None:
                await meddle(None)
            raise
        if meddle is not None:
            await meddle(service)
        return service


async def nothing(seen: dict[str, Any] | None) -> None:
    """No one else does anything."""


async def apply_once(
    api_client: client.ApiClient, namespace: str, meddle: Meddle, rule: str, **options: Any
) -> tuple[ApplyResult, MeddledKube]:
    kube = MeddledKube(api_client, meddle)
    request = ApplyRequest(namespace=namespace, deployment="web", rules=[rule], **options)
    async with kube:  # closed once the flow is done; its counts stay readable
        results = [r async for r in Lifecycle(kube, Settings()).apply(request)]
    assert len(results) == 1, results
    return results[0], kube


async def read(api_client: client.ApiClient, namespace: str, name: str) -> Any:
    return await client.CoreV1Api(api_client).read_namespaced_service(name, namespace)


@pytest.mark.parametrize("force", [False, True])
async def test_a_foreign_service_made_after_the_read_found_none_is_not_adopted(
    api_client: client.ApiClient, namespace: str, deployment: dict[str, Any], force: bool
) -> None:
    async def someone_else_creates_it(seen: dict[str, Any] | None) -> None:
        assert seen is None
        await foreign_service(api_client, namespace, "web")

    result, kube = await apply_once(
        api_client, namespace, someone_else_creates_it, "80:8088", force=force
    )

    assert (result.result.outcome, result.result.reason) == (Outcome.CONFLICT, "NotOwned")
    assert 'does not belong to Deployment "web"' in result.result.error
    assert kube.reads == 2  # the create found it there, and the Service was read again
    service = await read(api_client, namespace, "web")
    assert service.metadata.labels is None or MANAGED_BY_LABEL not in service.metadata.labels
    assert service.metadata.owner_references is None
    assert service.metadata.annotations is None
    assert service.spec.selector == FOREIGN_SELECTOR
    assert [(p.port, p.target_port) for p in service.spec.ports] == [(80, 80)]
    managers = {entry.manager for entry in service.metadata.managed_fields}
    assert "k8sailor" not in managers, managers


async def test_a_service_made_by_apply_is_k8sailors_apply_as_if_applied(
    api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    result, _ = await apply_once(api_client, namespace, nothing, "80:8088,81:8081")
    service = await read(api_client, namespace, "web")

    assert result.result.outcome is Outcome.CREATED
    # Created with a POST, its fields then moved to k8sailor's apply: a later apply that drops
    # a port removes it, and a dry run shows that, as for a Service server-side apply made.
    assert [(e.manager, e.operation) for e in service.metadata.managed_fields] == [
        ("k8sailor", "Apply")
    ]
    dry, _ = await apply_once(api_client, namespace, nothing, "80:8088", dry_run=True)
    assert dry.result.outcome is Outcome.UPDATED
    assert [p.port for p in dry.result.ports] == [80]


async def test_a_change_to_our_service_after_the_read_is_read_again_and_kept(
    api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    await apply_once(api_client, namespace, nothing, "80:8088")

    async def someone_labels_it(seen: dict[str, Any] | None) -> None:
        assert seen is not None
        patch = {"metadata": {"labels": {"team": "a"}}}
        await client.CoreV1Api(api_client).patch_namespaced_service("web", namespace, patch)

    result, kube = await apply_once(api_client, namespace, someone_labels_it, "80:9090")

    assert result.result.outcome is Outcome.UPDATED, result
    assert kube.reads == 2
    service = await read(api_client, namespace, "web")
    assert service.spec.ports[0].target_port == 9090
    assert service.metadata.labels["team"] == "a"


async def test_our_service_deleted_after_the_read_is_created_anew(
    api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    await apply_once(api_client, namespace, nothing, "80:8088")

    async def someone_deletes_it(seen: dict[str, Any] | None) -> None:
        assert seen is not None
        await client.CoreV1Api(api_client).delete_namespaced_service("web", namespace)

    result, _ = await apply_once(api_client, namespace, someone_deletes_it, "80:9090")

    assert (result.result.outcome, result.changes) == (Outcome.CREATED, ())
    service = await read(api_client, namespace, "web")
    assert service.spec.ports[0].target_port == 9090


async def test_our_service_replaced_by_a_foreign_one_after_the_read_is_left_alone(
    api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    await apply_once(api_client, namespace, nothing, "80:8088")

    async def someone_replaces_it(seen: dict[str, Any] | None) -> None:
        assert seen is not None
        await client.CoreV1Api(api_client).delete_namespaced_service("web", namespace)
        await foreign_service(api_client, namespace, "web")

    result, _ = await apply_once(api_client, namespace, someone_replaces_it, "80:9090", force=True)

    assert (result.result.outcome, result.result.reason) == (Outcome.CONFLICT, "NotOwned")
    service = await read(api_client, namespace, "web")
    assert service.metadata.owner_references is None
    assert service.spec.selector == FOREIGN_SELECTOR


async def never_asked(wanted: Collection[Grant]) -> Mapping[Grant, str]:
    raise AssertionError(f"asked {wanted}: every delete right was decided up front")


async def delete_once(
    api_client: client.ApiClient, namespace: str, meddle: Meddle, grants: Grants
) -> tuple[DeleteResult, MeddledKube]:
    kube = MeddledKube(api_client, meddle)
    request = DeleteRequest(namespace=namespace, deployment="web", names=["web"], grants=grants)
    async with kube:  # closed once the flow is done; its counts stay readable
        results = [r async for r in Lifecycle(kube, Settings()).delete(request)]
    assert len(results) == 1, results
    return results[0], kube


# The caller may delete the Deployment's ClusterIP Services and nothing else.
CLUSTER_IP_ONLY = Grants(
    denied={
        ("delete", t): f"carol may not delete services/{t.value.lower()}"
        for t in ServiceType
        if t is not ServiceType.CLUSTER_IP
    },
    decided=frozenset(("delete", t) for t in ServiceType),
    ask=never_asked,
)


async def test_a_service_whose_type_changed_after_the_read_is_deleted_only_with_that_right(
    api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    await apply_once(api_client, namespace, nothing, "80:8088")

    async def someone_makes_it_a_node_port(seen: dict[str, Any] | None) -> None:
        assert seen is not None
        assert seen["spec"]["type"] == "ClusterIP"
        patch = {"spec": {"type": "NodePort"}}
        await client.CoreV1Api(api_client).patch_namespaced_service("web", namespace, patch)

    result, kube = await delete_once(
        api_client, namespace, someone_makes_it_a_node_port, CLUSTER_IP_ONLY
    )

    assert (result.outcome, result.error) == (
        Outcome.DENIED,
        "carol may not delete services/nodeport",
    )
    assert kube.reads == 2
    assert (await read(api_client, namespace, "web")).spec.type == "NodePort"


async def test_a_service_changed_otherwise_after_the_read_is_read_again_and_deleted(
    api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    await apply_once(api_client, namespace, nothing, "80:8088")

    async def someone_labels_it(seen: dict[str, Any] | None) -> None:
        patch = {"metadata": {"labels": {"team": "a"}}}
        await client.CoreV1Api(api_client).patch_namespaced_service("web", namespace, patch)

    result, kube = await delete_once(api_client, namespace, someone_labels_it, CLUSTER_IP_ONLY)

    assert result.outcome is Outcome.DELETED, result
    assert kube.reads == 2
    listed = await client.CoreV1Api(api_client).list_namespaced_service(namespace)
    assert listed.items == []


async def test_a_type_change_whose_rights_cannot_be_asked_fails_and_changes_nothing(
    api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    await apply_once(api_client, namespace, nothing, "web=^80:8088")

    async def unreachable(wanted: Collection[Grant]) -> Mapping[Grant, str]:
        raise RightsUnknown("the API server could not be asked what carol may do: timed out")

    grants = Grants(
        denied={},
        decided=frozenset((v, ServiceType.CLUSTER_IP) for v in ("create", "update")),
        ask=unreachable,
    )
    kube = MeddledKube(api_client, nothing)
    request = ApplyRequest(namespace=namespace, deployment="web", rules=["80:8088"], grants=grants)
    async with kube:
        (result,) = [r async for r in Lifecycle(kube, Settings()).apply(request)]

    assert (result.result.outcome, result.result.reason) == (Outcome.FAILED, "AuthUnavailable")
    assert "could not be asked" in result.result.error
    assert (await read(api_client, namespace, "web")).spec.type == "LoadBalancer"
