"""ApplyServices' flow against a cluster in memory (tests.unit.lifecycle_fake): created,
updated with the fields it changed, not owned, denied, conflicts with another field manager,
and what a deadline does, asserted on the results. The same flow on the real API server:
tests/e2e/test_lifecycle.py and test_lifecycle_races.py."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping

import pytest

from server.auth.rights import Grant, Grants, RightsUnknown
from server.domain.diff import FieldChange
from server.domain.lifecycle import Lifecycle
from server.domain.lifecycle_requests import ApplyRequest
from server.domain.lifecycle_results import PRUNED_INDEX, ApplyResult
from server.domain.outcomes import Outcome
from server.domain.settings import Settings
from server.kube.errors import KubeConflict
from server.rules import ServiceType
from tests.unit.lifecycle_fake import FakeCluster, deployment, foreign

NS = "ns"
# What the API server says when a field another manager set would change.
CONFLICT = (
    'Apply failed with 1 conflict: conflict with "kubectl-edit" using v1: '
    '.spec.ports[port=80,protocol="TCP"].targetPort'
)


@pytest.fixture
def cluster() -> FakeCluster:
    fake = FakeCluster()
    fake.add_deployment(deployment())
    return fake


async def apply(
    cluster: FakeCluster,
    *rules: str,
    grants: Grants | None = None,
    deadline: float | None = None,
    **options: bool,
) -> list[ApplyResult]:
    request = ApplyRequest(NS, "web", list(rules), grants=grants, **options)
    results = [
        r async for r in Lifecycle(cluster, Settings()).apply(request, caller_deadline=deadline)
    ]
    return sorted(results, key=lambda r: r.result.index)


async def made(cluster: FakeCluster, *rules: str) -> None:
    """The Deployment's Services for rules, made through the flow itself; then no calls."""
    assert {r.result.outcome for r in await apply(cluster, *rules)} == {Outcome.CREATED}
    cluster.calls.clear()


def outcomes(results: list[ApplyResult]) -> list[tuple[int, str, Outcome, str]]:
    return [(r.result.index, r.result.service_name, r.result.outcome, r.result.reason)
            for r in results]  # fmt: skip


# ------------------------------------------------------------------ created and changed


async def test_a_new_rule_is_created_and_its_fields_become_k8sailors_apply(
    cluster: FakeCluster,
) -> None:
    [result] = await apply(cluster, "80:8088")

    assert outcomes([result]) == [(0, "web", Outcome.CREATED, "")]
    assert result.result.service_type is ServiceType.CLUSTER_IP
    service = cluster.service(NS, "web")
    assert service is not None
    assert [(e["manager"], e["operation"]) for e in service["metadata"]["managedFields"]] == [
        ("k8sailor", "Apply")
    ]


async def test_a_changed_rule_says_which_fields_changed(cluster: FakeCluster) -> None:
    await apply(cluster, "80:8088")

    [result] = await apply(cluster, "80:9090")

    assert outcomes([result]) == [(0, "web", Outcome.UPDATED, "")]
    assert FieldChange("spec.ports[0].targetPort", "8088", "9090") in result.changes
    assert (
        FieldChange('metadata.annotations["k8sailor.io/rule"]', "80:8088", "80:9090")
        in result.changes
    )


async def test_an_equal_rule_is_unchanged_with_no_changes(cluster: FakeCluster) -> None:
    await apply(cluster, "80:8088")

    [result] = await apply(cluster, "80:8088")

    assert result.result.outcome is Outcome.UNCHANGED
    assert result.changes == ()


async def test_prune_deletes_what_no_rule_names(cluster: FakeCluster) -> None:
    await apply(cluster, "80:8088", "!81:8088")

    results = await apply(cluster, "80:8088", prune=True)

    assert outcomes(results) == [
        (PRUNED_INDEX, "web-nodeport", Outcome.DELETED, ""),
        (0, "web", Outcome.UNCHANGED, ""),
    ]
    assert results[0].result.rule == "!81:8088"
    assert set(cluster.services) == {(NS, "web")}


# ------------------------------------------------------------------------------ not owned


async def test_a_service_of_the_name_that_is_not_owned_is_a_conflict_and_left(
    cluster: FakeCluster,
) -> None:
    cluster.add_service(foreign("web"))

    [result] = await apply(cluster, "80:8088", force=True)

    assert outcomes([result]) == [(0, "web", Outcome.CONFLICT, "NotOwned")]
    assert 'does not belong to Deployment "web"' in result.result.error
    assert cluster.count("apply_service") == cluster.count("create_service") == 0


async def test_a_foreign_service_made_after_the_read_is_not_adopted(cluster: FakeCluster) -> None:
    cluster.after_read["web"] = lambda: cluster.add_service(foreign("web"))

    [result] = await apply(cluster, "80:8088")

    assert outcomes([result]) == [(0, "web", Outcome.CONFLICT, "NotOwned")]
    assert cluster.count("read_service") == 2  # read again after the create found it
    assert cluster.count("apply_service") == 0


# --------------------------------------------------------------------------------- denied


async def never_asked(wanted: Collection[Grant]) -> Mapping[Grant, str]:
    raise AssertionError(f"asked {wanted}")


def rights(denied: Mapping[Grant, str]) -> Grants:
    decided = frozenset((v, t) for v in ("create", "update", "delete") for t in ServiceType)
    return Grants(denied=denied, decided=decided, ask=never_asked)


async def test_a_rule_the_caller_may_neither_create_nor_update_reads_nothing(
    cluster: FakeCluster,
) -> None:
    denied = {
        ("create", ServiceType.NODE_PORT): "may not create",
        ("update", ServiceType.NODE_PORT): "may not update",
    }

    [result] = await apply(cluster, "!80:8088", grants=rights(denied))

    assert outcomes([result]) == [(0, "web-nodeport", Outcome.DENIED, "Forbidden")]
    assert result.result.error == "may not create; may not update"
    assert cluster.calls == [("read_deployment", None)]  # nothing of the Service was read


async def test_a_caller_that_may_only_update_cannot_create(cluster: FakeCluster) -> None:
    denied = {("create", ServiceType.CLUSTER_IP): "alice may not create clusterip services"}

    [result] = await apply(cluster, "80:8088", grants=rights(denied))

    assert outcomes([result]) == [(0, "web", Outcome.DENIED, "Forbidden")]
    assert cluster.service(NS, "web") is None


async def test_a_change_of_type_needs_delete_of_the_old_and_create_of_the_new(
    cluster: FakeCluster,
) -> None:
    await apply(cluster, "80:8088")
    asked: list[Collection[Grant]] = []

    async def ask(wanted: Collection[Grant]) -> Mapping[Grant, str]:
        asked.append(wanted)
        return {("delete", ServiceType.CLUSTER_IP): "alice may not delete clusterip services"}

    undecided = frozenset({("update", ServiceType.NODE_PORT), ("create", ServiceType.NODE_PORT)})
    grants = Grants(denied={}, decided=undecided, ask=ask)
    request = ApplyRequest(NS, "web", ["web=!80:8088"], grants=grants)

    [result] = [r async for r in Lifecycle(cluster, Settings()).apply(request)]

    assert (result.result.outcome, result.result.reason) == (Outcome.DENIED, "Forbidden")
    assert "a change of type needs the rights to delete the one" in result.result.error
    assert "alice may not delete clusterip services" in result.result.error
    assert asked == [[("delete", ServiceType.CLUSTER_IP)]]
    assert cluster.count("apply_service") == 0


async def test_rights_that_cannot_be_asked_fail_the_rule(cluster: FakeCluster) -> None:
    await apply(cluster, "80:8088")

    async def unavailable(wanted: Collection[Grant]) -> Mapping[Grant, str]:
        raise RightsUnknown("SubjectAccessReview failed: the API server did not answer")

    decided = frozenset({("update", ServiceType.NODE_PORT), ("create", ServiceType.NODE_PORT)})
    request = ApplyRequest(
        NS, "web", ["web=!80:8088"], grants=Grants(denied={}, decided=decided, ask=unavailable)
    )

    [result] = [r async for r in Lifecycle(cluster, Settings()).apply(request)]

    assert (result.result.outcome, result.result.reason) == (Outcome.FAILED, "AuthUnavailable")


# ------------------------------------------------------------------------------- conflict


async def test_a_field_another_manager_owns_is_a_conflict_naming_it(cluster: FakeCluster) -> None:
    await apply(cluster, "80:8088")
    cluster.fail["apply_service"] = [KubeConflict(CONFLICT, status=409, reason="Conflict")]

    [result] = await apply(cluster, "80:9090")

    assert outcomes([result]) == [(0, "web", Outcome.CONFLICT, "FieldManagerConflict")]
    assert '("kubectl-edit")' in result.result.error
    assert "apply with force to take them over" in result.result.error
    assert cluster.applied == [{"force": False, "dry_run": False}]  # not retried: left as is


async def test_a_conflict_with_our_own_create_is_taken_over_without_force(
    cluster: FakeCluster,
) -> None:
    await apply(cluster, "80:8088")
    ours = CONFLICT.replace("kubectl-edit", "k8sailor")
    cluster.fail["apply_service"] = [KubeConflict(ours, status=409, reason="Conflict")]

    [result] = await apply(cluster, "80:9090", dry_run=True)

    assert result.result.outcome is Outcome.UPDATED
    assert cluster.applied == [{"force": False, "dry_run": True}, {"force": True, "dry_run": True}]


async def test_a_service_that_changes_under_every_apply_is_a_conflict(
    cluster: FakeCluster,
) -> None:
    await made(cluster, "80:8088")
    stale = KubeConflict("the object has been modified", status=409, reason="Conflict")
    cluster.fail["apply_service"] = [stale, stale, stale]

    [result] = await apply(cluster, "80:9090")

    assert outcomes([result]) == [(0, "web", Outcome.CONFLICT, "Conflict")]
    assert "changed each of the 3 times it was read" in result.result.error
    assert cluster.count("apply_service") == 3
    assert cluster.count("read_service") == 1 + 3  # once, then again after each stale apply


# ------------------------------------------------------------------------------- deadline


async def test_every_rule_gets_a_result_when_the_api_server_does_not_answer_in_time(
    cluster: FakeCluster,
) -> None:
    cluster.hang.add("read_service")
    deadline = asyncio.get_running_loop().time() + 0.2

    async with asyncio.timeout(5):  # a guard: a flow that waits forever fails, not hangs
        results = await apply(cluster, "80:8088", "!81:8088", deadline=deadline)

    assert outcomes(results) == [
        (0, "web", Outcome.FAILED, "Timeout"),
        (1, "web-nodeport", Outcome.FAILED, "Timeout"),
    ]
    assert all(timeout is not None and 0 < timeout <= 0.2 for _, timeout in cluster.calls)
    assert cluster.services == {}
