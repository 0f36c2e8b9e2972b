"""What the lifecycle RPCs tell a caller about Services that are not its Deployment's, on the
real API server with RBAC: the caller's k8sailor.io rights are on the Deployment's own
Services, so whether the namespace holds someone else's Service of a name is not its to learn,
unless a right it holds would tell it anyway (create: a create of that name fails)."""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client

from client import Client, Outcome
from tests.auth.conftest import Pki, Serve, Teams, mtls, service_names
from tests.auth.test_lifecycle_rbac import as_caller, grant


async def foreign(api_client: client.ApiClient, namespace: str, name: str, kind: str) -> None:
    """A Service that k8sailor did not make: no owner, no managed-by label."""
    port: dict[str, Any] = {"port": 80}
    body: Any = {"metadata": {"name": name}, "spec": {"type": kind, "ports": [port]}}
    await client.CoreV1Api(api_client).create_namespaced_service(namespace, body)


async def delete_named(k8sailor: Client, namespace: str, *names: str) -> dict[str, Any]:
    return {
        r.service_name: (r.outcome, r.reason, r.error.replace(f'"{r.service_name}"', '"<name>"'))
        async for r in k8sailor.delete_services("web", names, namespace=namespace)
    }


async def apply_rules(k8sailor: Client, namespace: str, *rules: str) -> dict[str, Any]:
    return {
        r.service_name: (r.outcome, r.reason, r.error)
        async for r in k8sailor.apply_services("web", rules, namespace=namespace)
    }


async def test_delete_answers_alike_for_a_foreign_service_and_a_missing_one(
    serve: Serve, pki: Pki, teams: Teams, api_client: client.ApiClient
) -> None:
    # ivan may delete the Deployment's ClusterIP Services; he may not read Services at all.
    await grant(api_client, teams.a, "ivan", {"clusterip": ["delete"]})
    ivan = pki.ca.issue(common_name="ivan")
    await foreign(api_client, teams.a, "db", "ClusterIP")
    await foreign(api_client, teams.a, "edge", "NodePort")

    async with serve(mtls(pki)) as target, as_caller(target, pki, ivan) as k8sailor:
        answers = await delete_named(k8sailor, teams.a, "db", "edge", "nothing")

    assert answers["db"] == answers["edge"] == answers["nothing"], answers
    assert answers["nothing"] == (
        Outcome.NOT_FOUND,
        "NotFound",
        'Deployment "web" has no Service "<name>" (k8sailor deletes only the Services a '
        "Deployment owns); nothing was deleted",
    )
    assert await service_names(api_client, teams.a) == {"db", "edge"}


async def test_apply_without_create_answers_alike_for_a_foreign_name_and_a_free_one(
    serve: Serve, pki: Pki, teams: Teams, api_client: client.ApiClient
) -> None:
    # judy may update the Deployment's NodePort Services, not create one: she cannot learn
    # by creating whether a name is taken, so apply must not tell her either.
    await grant(api_client, teams.a, "judy", {"nodeport": ["update"]})
    judy = pki.ca.issue(common_name="judy")
    await foreign(api_client, teams.a, "db", "NodePort")

    async with serve(mtls(pki)) as target, as_caller(target, pki, judy) as k8sailor:
        answers = await apply_rules(k8sailor, teams.a, "db=!80:8080", "free=!80:8080")

    assert answers["db"] == answers["free"], answers
    outcome, reason, error = answers["free"]
    assert (outcome, reason) == (Outcome.DENIED, "Forbidden")
    assert error.startswith("judy may not create services/nodeport"), error
    assert await service_names(api_client, teams.a) == {"db"}


async def test_a_caller_who_may_not_act_on_the_type_gets_one_denial_whatever_is_there(
    serve: Serve, pki: Pki, teams: Teams, api_client: client.ApiClient
) -> None:
    # kim may do everything with ClusterIP Services and nothing with NodePorts.
    await grant(api_client, teams.a, "kim", {
        "clusterip": ["create", "update", "list", "delete"],
    })  # fmt: skip
    kim = pki.ca.issue(common_name="kim")
    await foreign(api_client, teams.a, "db", "NodePort")
    async with serve(mtls(pki)) as target, as_caller(target, pki, kim) as k8sailor:
        # With a rule kim may apply, or the request would be refused whole.
        answers = await apply_rules(k8sailor, teams.a, "db=!80:8080", "free=!80:8080", "80")
        # Where kim may create, a taken name is a conflict: a create would tell her as much.
        taken = await apply_rules(k8sailor, teams.a, "db=80:8080")

    assert answers["db"] == answers["free"], answers
    outcome, _, error = answers["free"]
    assert outcome is Outcome.DENIED
    assert error.startswith("kim may not create services/nodeport"), error
    assert "kim may not update services/nodeport" in error
    assert answers["web"][0] is Outcome.CREATED
    assert taken["db"][:2] == (Outcome.CONFLICT, "NotOwned")
    assert await service_names(api_client, teams.a) == {"db", "web"}
