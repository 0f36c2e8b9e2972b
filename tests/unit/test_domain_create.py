"""The create flow (server.domain.create) against a small in-memory cluster: what each rule's
result says when the API server refuses, conflicts, is unreachable, or does not answer before
the caller's deadline. The same paths against the real API server: tests/e2e/test_exposure.py."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from typing import Any

import pytest

from server.auth.rights import Grants
from server.domain.cluster import Services
from server.domain.create import Exposer, ExposeRequest
from server.domain.errors import (
    ClusterForbidden,
    ClusterUnavailable,
    DeploymentNotFound,
    DeploymentUnusable,
)
from server.domain.outcomes import Outcome, RuleResult
from server.domain.rights import Rights
from server.domain.settings import Settings
from server.kube.errors import (
    KubeAlreadyExists,
    KubeError,
    KubeForbidden,
    KubeNotFound,
    KubeUnavailable,
)
from server.rules import ServiceType

Json = dict[str, Any]
UID = "0000-web"


def deployment(name: str = "web", selector: Json | None = None) -> Json:
    return {
        "metadata": {"name": name, "namespace": "team", "uid": UID},
        "spec": {
            "selector": selector or {"matchLabels": {"app": name}},
            "template": {"spec": {"containers": [{"name": "app", "ports": []}]}},
        },
    }


class FakeCluster:
    """Deployments and Services in dicts; what a test wants refused, refused."""

    def __init__(self) -> None:
        self.deployments: dict[str, Json] = {"web": deployment()}
        self.services: dict[str, Json] = {}
        self.deployment_error: KubeError | None = None
        self.refuse: dict[str, KubeError] = {}  # Service name -> what its create raises
        self.silent: set[str] = set()  # Services whose create never answers
        self.cancelled: list[str] = []
        self.reads: list[str] = []
        self.creates: list[str] = []

    async def read_deployment(self, namespace: str, name: str, *, timeout: float | None) -> Json:
        self.reads.append(f"deployments/{name}")
        if self.deployment_error is not None:
            raise self.deployment_error
        if name not in self.deployments:
            raise KubeNotFound(f'deployments.apps "{name}" not found', status=404)
        return copy.deepcopy(self.deployments[name])

    async def read_service(self, namespace: str, name: str, *, timeout: float | None) -> Json:
        self.reads.append(f"services/{name}")
        if name not in self.services:
            raise KubeNotFound(f'services "{name}" not found', status=404, reason="NotFound")
        return copy.deepcopy(self.services[name])

    async def create_service(
        self, namespace: str, manifest: Mapping[str, Any], *, dry_run: bool, timeout: float | None
    ) -> Json:
        name = manifest["metadata"]["name"]
        self.creates.append(name)
        if name in self.silent:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.append(name)
                raise
        if name in self.refuse:
            raise self.refuse[name]
        if name in self.services:
            raise KubeAlreadyExists(
                f'services "{name}" already exists', status=409, reason="AlreadyExists"
            )
        created = copy.deepcopy(dict(manifest))
        created["spec"].setdefault("clusterIP", "10.96.0.10")
        if not dry_run:
            self.services[name] = created
        return copy.deepcopy(created)


def test_the_fake_is_a_cluster_as_the_flow_needs_it() -> None:
    cluster: Services = FakeCluster()  # mypy checks the protocol
    rights: Rights = Grants(denied={}, decided=frozenset())  # and auth's value against it
    assert isinstance(cluster, FakeCluster)
    assert rights.refusal("create", ServiceType.CLUSTER_IP) is not None  # undecided


async def expose(
    cluster: FakeCluster, *rules: str, deadline: float | None = None, rights: Rights | None = None
) -> list[RuleResult]:
    exposer = Exposer(cluster, Settings())
    request = ExposeRequest("team", "web", list(rules), permissions=rights)
    return [result async for result in exposer.expose(request, caller_deadline=deadline)]


def by_index(results: list[RuleResult]) -> dict[int, tuple[Outcome, str]]:
    """Each rule's outcome and reason, by its index (results carry the canonical text)."""
    return {result.index: (result.outcome, result.reason) for result in results}


async def test_every_rule_is_created_once_and_says_what_the_cluster_made() -> None:
    cluster = FakeCluster()

    results = await expose(cluster, "80:8080", "!8080:8080")

    assert by_index(results) == {
        0: (Outcome.CREATED, ""),
        1: (Outcome.CREATED, ""),
    }
    assert sorted(cluster.creates) == sorted(result.service_name for result in results)
    assert {result.cluster_ip for result in results} == {"10.96.0.10"}
    assert {result.service_type for result in results} == {
        ServiceType.CLUSTER_IP,
        ServiceType.NODE_PORT,
    }
    assert cluster.reads == ["deployments/web"]  # the Deployment, read once


async def test_a_rule_the_cluster_does_not_answer_before_the_deadline_gives_up_in_time() -> None:
    cluster = FakeCluster()
    first = await expose(FakeCluster(), "80:8080", "!8080:8080")
    silent = next(r.service_name for r in first if r.service_type is ServiceType.NODE_PORT)
    cluster.silent.add(silent)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 0.5

    results = await expose(cluster, "80:8080", "!8080:8080", deadline=deadline)

    # Given up before the caller's deadline (a tenth of its time early, at least 50 ms), so
    # that this result still reaches it.
    assert loop.time() < deadline
    assert by_index(results) == {
        0: (Outcome.CREATED, ""),
        1: (Outcome.FAILED, "DeadlineExceeded"),
    }
    late = results[-1]
    assert (late.service_name, late.service_type) == (silent, ServiceType.NODE_PORT)
    assert "may or may not exist" in late.error
    assert cluster.cancelled == [silent]  # no create outlives the request


async def test_a_rule_of_a_type_the_caller_may_not_create_is_denied_and_never_sent() -> None:
    cluster = FakeCluster()
    rights = Grants(
        denied={("create", ServiceType.NODE_PORT): "erin may not create services/nodeport"},
        decided=frozenset(("create", t) for t in (ServiceType.CLUSTER_IP, ServiceType.NODE_PORT)),
    )

    results = await expose(cluster, "80:8080", "!8080:8080", rights=rights)

    assert by_index(results) == {
        0: (Outcome.CREATED, ""),
        1: (Outcome.DENIED, "Forbidden"),
    }
    denied = next(r for r in results if r.outcome is Outcome.DENIED)
    assert denied.error == "erin may not create services/nodeport"
    assert denied.service_type is ServiceType.NODE_PORT
    assert len(cluster.creates) == 1


async def test_when_every_rule_is_denied_or_invalid_the_deployment_is_not_even_read() -> None:
    cluster = FakeCluster()
    del cluster.deployments["web"]  # the answer must not tell whether it exists
    rights = Grants(
        denied={("create", ServiceType.NODE_PORT): "erin may not create services/nodeport"},
        decided=frozenset({("create", ServiceType.NODE_PORT)}),
    )

    results = await expose(cluster, "!8080:8080", "80:99999", rights=rights)

    assert by_index(results) == {
        0: (Outcome.DENIED, "Forbidden"),
        1: (Outcome.INVALID, "RuleInvalid"),
    }
    assert cluster.reads == []
    assert cluster.creates == []


async def test_a_type_nobody_decided_on_is_refused() -> None:
    rights = Grants(denied={}, decided=frozenset({("create", ServiceType.CLUSTER_IP)}))

    results = await expose(FakeCluster(), "!8080:8080", rights=rights)

    assert by_index(results) == {0: (Outcome.DENIED, "Forbidden")}
    assert "was not authorized for this request" in results[0].error


async def test_a_create_the_api_server_forbids_fails_that_rule_only() -> None:
    cluster = FakeCluster()
    first = await expose(FakeCluster(), "80:8080", "!8080:8080")
    forbidden = next(r.service_name for r in first if r.service_type is ServiceType.NODE_PORT)
    cluster.refuse[forbidden] = KubeForbidden(
        'services "web-nodeport" is forbidden: exceeded quota', status=403, reason="Forbidden"
    )

    results = await expose(cluster, "80:8080", "!8080:8080")

    assert by_index(results) == {
        0: (Outcome.CREATED, ""),
        1: (Outcome.FAILED, "Forbidden"),
    }
    assert "exceeded quota" in results[-1].error


async def test_a_name_another_owner_has_is_a_conflict_and_the_service_is_left_alone() -> None:
    cluster = FakeCluster()
    (mine,) = await expose(FakeCluster(), "80:8080")
    theirs = {
        "metadata": {"name": mine.service_name, "ownerReferences": [{"uid": "someone-else"}]},
        "spec": {"type": "ClusterIP", "selector": {"app": "other"}, "ports": [{"port": 80}]},
    }
    cluster.services[mine.service_name] = copy.deepcopy(theirs)

    (result,) = await expose(cluster, "80:8080")

    assert (result.outcome, result.reason) == (Outcome.CONFLICT, "AlreadyExists")
    assert 'does not belong to Deployment "web"' in result.error
    assert cluster.services[mine.service_name] == theirs


async def test_the_same_rule_again_is_unchanged_and_a_changed_one_a_conflict() -> None:
    cluster = FakeCluster()
    await expose(cluster, "80:8080")

    (again,) = await expose(cluster, "80:8080")
    (changed,) = await expose(cluster, "80:9090")

    assert (again.outcome, again.cluster_ip) == (Outcome.UNCHANGED, "10.96.0.10")
    assert (changed.outcome, changed.reason) == (Outcome.CONFLICT, "AlreadyExists")
    assert "already exists for this Deployment with a different spec" in changed.error


async def test_an_unreachable_api_server_fails_the_rules_it_could_not_create() -> None:
    cluster = FakeCluster()
    (first,) = await expose(FakeCluster(), "80:8080")
    cluster.refuse[first.service_name] = KubeUnavailable(
        "the API server could not be reached: connection refused", reason="ServiceUnavailable"
    )

    (result,) = await expose(cluster, "80:8080")

    assert (result.outcome, result.reason) == (Outcome.FAILED, "ServiceUnavailable")
    assert result.error == "the API server could not be reached: connection refused"


@pytest.mark.parametrize(
    ("error", "refusal", "says"),
    [
        (
            KubeUnavailable("connection refused", reason="ServiceUnavailable"),
            ClusterUnavailable,
            'reading Deployment "web": connection refused',
        ),
        (
            KubeForbidden("deployments.apps is forbidden", status=403, reason="Forbidden"),
            ClusterForbidden,
            "the API server refused k8sailor reading Deployment",
        ),
    ],
)
async def test_a_deployment_that_cannot_be_read_fails_the_request_before_any_result(
    error: KubeError, refusal: type[Exception], says: str
) -> None:
    cluster = FakeCluster()
    cluster.deployment_error = error

    with pytest.raises(refusal, match=says):
        await expose(cluster, "80:8080")
    assert cluster.creates == []


async def test_a_missing_or_unusable_deployment_fails_the_request() -> None:
    cluster = FakeCluster()
    del cluster.deployments["web"]
    with pytest.raises(DeploymentNotFound, match='Deployment "web" not found'):
        await expose(cluster, "80:8080")

    cluster.deployments["web"] = deployment(
        selector={"matchExpressions": [{"key": "app", "operator": "Exists"}]}
    )
    with pytest.raises(DeploymentUnusable):
        await expose(cluster, "80:8080")
    assert cluster.creates == []
