"""ListServices' and DeleteServices' flows against a cluster in memory (tests.unit.
lifecycle_fake): what is owned, what the caller may not do, and what a deadline does, asserted
on the results. The same flows on the real API server: tests/e2e/test_lifecycle*.py."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import pytest

from server.auth.rights import Grant, Grants
from server.domain.errors import (
    ClusterForbidden,
    ClusterUnavailable,
    DeploymentNotFound,
    DeploymentUnusable,
    NotPermitted,
)
from server.domain.lifecycle import Lifecycle
from server.domain.lifecycle_requests import ApplyRequest, DeleteRequest
from server.domain.lifecycle_results import DeleteResult
from server.domain.outcomes import Outcome
from server.domain.settings import Settings
from server.kube.errors import KubeConflict, KubeForbidden, KubeNotFound, KubeUnavailable
from server.kube.services import owned_by
from server.manifests import MANAGED_BY_LABEL, MANAGED_BY_VALUE
from server.rules import ServiceType
from tests.unit.lifecycle_fake import UID, FakeCluster, deployment, foreign

NS = "ns"
OURS = {MANAGED_BY_LABEL: MANAGED_BY_VALUE}
OUR_OWNER = [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": UID}]


async def never_asked(wanted: Collection[Grant]) -> Mapping[Grant, str]:
    raise AssertionError(f"asked {wanted}")


def rights_to(denied: Mapping[Grant, str], *verbs: str) -> Grants:
    decided = frozenset((verb, type_) for verb in verbs for type_ in ServiceType)
    return Grants(denied=denied, decided=decided, ask=never_asked)


@pytest.fixture
def cluster() -> FakeCluster:
    fake = FakeCluster()
    fake.add_deployment(deployment())
    return fake


async def made(cluster: FakeCluster, *rules: str) -> None:
    """The Deployment's Services for rules, made through the flow itself."""
    request = ApplyRequest(namespace=NS, deployment="web", rules=list(rules))
    results = [r async for r in Lifecycle(cluster, Settings()).apply(request)]
    assert {r.result.outcome for r in results} == {Outcome.CREATED}, results
    cluster.calls.clear()


async def delete(
    cluster: FakeCluster,
    names: Sequence[str] = (),
    *,
    all: bool = False,
    rights: Grants | None = None,
) -> list[DeleteResult]:
    request = DeleteRequest(NS, "web", names, all=all, rights=rights)
    results = [r async for r in Lifecycle(cluster, Settings()).delete(request)]
    return sorted(results, key=lambda r: r.service_name)


# ---------------------------------------------------------------------------- ownership


@pytest.mark.parametrize(
    ("metadata", "owned"),
    [
        ({"labels": OURS, "ownerReferences": OUR_OWNER}, True),
        ({}, False),
        ({"ownerReferences": OUR_OWNER}, False),  # the managed-by label was removed
        ({"labels": OURS}, False),  # the ownerReference was removed
        ({"labels": OURS, "ownerReferences": [{**OUR_OWNER[0], "uid": "an-older-web"}]}, False),
        ({"labels": {MANAGED_BY_LABEL: "helm"}, "ownerReferences": OUR_OWNER}, False),
    ],
)
def test_a_service_is_the_deployments_only_with_both_marks(
    metadata: dict[str, Any], owned: bool
) -> None:
    assert owned_by(foreign("web", **metadata), UID) is owned


async def test_list_shows_only_what_the_deployment_owns(cluster: FakeCluster) -> None:
    await made(cluster, "80:8088", "#81:8088")
    cluster.add_service(foreign("lost-label", ownerReferences=OUR_OWNER))
    cluster.add_service(foreign("someone-elses", labels=OURS))

    listed = await Lifecycle(cluster, Settings()).list_owned(NS, "web")

    assert [(s.name, s.type, s.rule) for s in listed] == [
        ("web", ServiceType.CLUSTER_IP, "80:8088"),
        ("web-headless", ServiceType.HEADLESS, "#81:8088"),
    ]


async def test_a_service_that_is_not_owned_is_not_found_and_not_deleted(
    cluster: FakeCluster,
) -> None:
    cluster.add_service(foreign("theirs"))
    cluster.add_service(foreign("lost-label", ownerReferences=OUR_OWNER))

    results = await delete(cluster, ["lost-label", "missing", "theirs"])

    assert [(r.service_name, r.outcome, r.reason) for r in results] == [
        ("lost-label", Outcome.NOT_FOUND, "NotFound"),
        ("missing", Outcome.NOT_FOUND, "NotFound"),
        ("theirs", Outcome.NOT_FOUND, "NotFound"),
    ]
    # One answer for all three: whether another's Service has the name is not the caller's.
    assert len({r.error for r in results}) == 3
    assert all('Deployment "web" has no Service' in r.error for r in results)
    assert cluster.count("delete_service") == 0
    assert cluster.service(NS, "theirs") is not None


async def test_delete_all_deletes_what_is_owned_and_says_each_type(cluster: FakeCluster) -> None:
    await made(cluster, "80:8088", "!81:8088")
    cluster.add_service(foreign("theirs"))

    results = await delete(cluster, all=True)

    assert [(r.service_name, r.outcome, r.service_type) for r in results] == [
        ("web", Outcome.DELETED, ServiceType.CLUSTER_IP),
        ("web-nodeport", Outcome.DELETED, ServiceType.NODE_PORT),
    ]
    assert set(cluster.services) == {(NS, "theirs")}


async def test_what_the_api_server_refuses_the_request_is_the_domains_own_error(
    cluster: FakeCluster,
) -> None:
    cluster.fail["list_services"] = [KubeForbidden("services is forbidden", status=403)]
    cluster.fail["read_deployment"] = [KubeUnavailable("API server unreachable", reason="x")]
    lifecycle = Lifecycle(cluster, Settings())

    with pytest.raises(
        ClusterUnavailable, match='reading Deployment "web": API server unreachable'
    ):
        await lifecycle.list_owned(NS, "web")
    with pytest.raises(ClusterForbidden, match="refused k8sailor: services is forbidden"):
        await lifecycle.list_owned(NS, "web")


async def test_what_a_deployment_owns_is_listed_and_deleted_whatever_its_selector(
    cluster: FakeCluster,
) -> None:
    await made(cluster, "80:8088")
    unusable = deployment()
    unusable["spec"]["selector"] = {"matchExpressions": [{"key": "app", "operator": "Exists"}]}
    cluster.add_deployment(unusable)

    assert [s.name for s in await Lifecycle(cluster, Settings()).list_owned(NS, "web")] == ["web"]
    [result] = await delete(cluster, ["web"])
    assert result.outcome is Outcome.DELETED
    request = ApplyRequest(namespace=NS, deployment="web", rules=["80:8088"])
    with pytest.raises(DeploymentUnusable):
        _ = [r async for r in Lifecycle(cluster, Settings()).apply(request)]


async def test_a_missing_deployment_is_a_request_error(cluster: FakeCluster) -> None:
    request = DeleteRequest(namespace=NS, deployment="nope", names=["web"])
    with pytest.raises(DeploymentNotFound):
        _ = [r async for r in Lifecycle(cluster, Settings()).delete(request)]


# ------------------------------------------------------------------------------- denied


async def test_a_type_the_caller_may_not_delete_is_denied_and_left(cluster: FakeCluster) -> None:
    await made(cluster, "80:8088", "!81:8088")
    refusal = "alice may not delete nodeport services"
    rights = rights_to({("delete", ServiceType.NODE_PORT): refusal}, "delete")

    results = await delete(cluster, all=True, rights=rights)

    assert [(r.service_name, r.outcome, r.error, r.reason) for r in results] == [
        ("web", Outcome.DELETED, "", ""),
        ("web-nodeport", Outcome.DENIED, refusal, "Forbidden"),
    ]
    assert cluster.service(NS, "web-nodeport") is not None
    assert cluster.count("delete_service") == 1


async def test_a_pair_nobody_decided_is_refused_not_allowed(cluster: FakeCluster) -> None:
    await made(cluster, "80:8088")
    rights = rights_to({}, "list")  # delete was never asked: a bug of ours, failing closed

    [result] = await delete(cluster, ["web"], rights=rights)

    assert (result.outcome, result.reason) == (Outcome.DENIED, "Forbidden")
    assert "was not authorized for this request" in result.error
    assert cluster.service(NS, "web") is not None


async def test_a_list_with_a_type_the_caller_may_not_list_is_refused_whole(
    cluster: FakeCluster,
) -> None:
    await made(cluster, "80:8088", "!81:8088")
    rights = rights_to({("list", ServiceType.NODE_PORT): "alice may not list nodeports"}, "list")

    with pytest.raises(NotPermitted, match="alice may not list nodeports"):
        await Lifecycle(cluster, Settings()).list_owned(NS, "web", rights=rights)


# ------------------------------------------------------------------- changed and gone


async def test_a_service_that_changes_under_every_delete_is_a_conflict(
    cluster: FakeCluster,
) -> None:
    await made(cluster, "80:8088")
    cluster.fail["delete_service"] = [KubeConflict("Precondition failed", status=409)] * 3

    [result] = await delete(cluster, ["web"])

    assert (result.outcome, result.reason) == (Outcome.CONFLICT, "Conflict")
    assert "changed each of the 3 times" in result.error
    assert cluster.count("delete_service") == 3
    assert cluster.service(NS, "web") is not None


async def test_a_service_that_became_anothers_after_the_read_is_not_deleted(
    cluster: FakeCluster,
) -> None:
    await made(cluster, "80:8088")
    cluster.after_read["web"] = lambda: cluster.replace_service(foreign("web"))

    [result] = await delete(cluster, ["web"])

    assert result.outcome is Outcome.NOT_FOUND
    assert cluster.count("delete_service") == 1  # its uid precondition failed: read again
    theirs = cluster.service(NS, "web")
    assert theirs is not None
    assert not owned_by(theirs, UID)


async def test_a_delete_whose_lost_answer_deleted_it_is_deleted(cluster: FakeCluster) -> None:
    await made(cluster, "80:8088")
    lost = KubeNotFound('services "web" not found', status=404)
    lost.unanswered_before = True  # an earlier attempt's answer was lost: it deleted it
    cluster.fail["delete_service"] = [lost]

    [result] = await delete(cluster, ["web"])

    assert result.outcome is Outcome.DELETED


# ----------------------------------------------------------------------------- deadline


async def test_every_name_gets_a_result_when_the_api_server_does_not_answer_in_time(
    cluster: FakeCluster,
) -> None:
    await made(cluster, "80:8088", "other=81:8088")
    cluster.hang.add("delete_service")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 0.2
    request = DeleteRequest(namespace=NS, deployment="web", names=["web", "other"])

    async with asyncio.timeout(5):  # a guard: a flow that waits forever fails, not hangs
        results = [
            r
            async for r in Lifecycle(cluster, Settings()).delete(request, caller_deadline=deadline)
        ]

    assert sorted((r.service_name, r.outcome, r.reason) for r in results) == [
        ("other", Outcome.FAILED, "Timeout"),
        ("web", Outcome.FAILED, "Timeout"),
    ]
    # Every call was given no more than the time left until the deadline.
    assert all(timeout is not None and 0 < timeout <= 0.2 for _, timeout in cluster.calls)
    assert len(cluster.services) == 2
