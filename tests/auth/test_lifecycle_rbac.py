"""ListServices, DeleteServices and ApplyServices under RBAC: the verbs list, delete, create
and update on k8sailor.io services/<type>, decided by the real API server per Service type."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from kubernetes_asyncio import client

from client import Client, Outcome, RequestFailed, connect
from tests.auth.conftest import Pki, Serve, Teams, mtls, service_names
from tests.pki import Issued
from tests.rbac import until_effective
from tests.servers import k8sailor_over


async def grant(
    api_client: client.ApiClient, namespace: str, user: str, rules: dict[str, list[str]]
) -> None:
    """A Role with verbs per k8sailor.io services/<subresource>, bound to user."""
    name = f"lifecycle-{uuid.uuid4().hex[:6]}"
    role: Any = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name},
        "rules": [
            {"apiGroups": ["k8sailor.io"], "resources": [f"services/{sub}"], "verbs": verbs}
            for sub, verbs in rules.items()
        ],
    }
    binding: Any = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
    }
    rbac = client.RbacAuthorizationV1Api(api_client)
    await rbac.create_namespaced_role(namespace, role)
    await rbac.create_namespaced_role_binding(namespace, binding)
    subject = binding["subjects"][0]
    for sub, verbs in rules.items():
        rule = client.V1PolicyRule(
            api_groups=["k8sailor.io"], resources=[f"services/{sub}"], verbs=verbs
        )
        await until_effective(api_client, namespace, subject, rule)


def as_caller(target: str, pki: Pki, identity: Issued) -> Any:
    return connect(
        target,
        root_certificates=pki.ca.pem,
        certificate_chain=identity.certificate,
        private_key=identity.private_key,
    )


async def applied(k8sailor: Client, namespace: str, *rules: str, **options: Any) -> dict[str, Any]:
    return {
        r.service_name: (r.outcome, r.error)
        async for r in k8sailor.apply_services("web", rules, namespace=namespace, **options)
    }


async def deleted(k8sailor: Client, namespace: str, **options: Any) -> dict[str, Any]:
    return {
        r.service_name: (r.outcome, r.error)
        async for r in k8sailor.delete_services("web", namespace=namespace, **options)
    }


async def test_each_verb_is_decided_per_service_type(
    serve: Serve, pki: Pki, teams: Teams, api_client: client.ApiClient
) -> None:
    await grant(api_client, teams.a, "carol", {
        "clusterip": ["create", "update", "list", "delete"],
        "headless": ["list"],
    })  # fmt: skip
    carol = pki.ca.issue(common_name="carol")
    # A headless Service that someone allowed made.
    async with k8sailor_over(api_client) as admin:
        assert (await applied(admin, teams.a, "#80:8080"))["web-headless"][0] is Outcome.CREATED

    async with serve(mtls(pki)) as target, as_caller(target, pki, carol) as k8sailor:
        made = await applied(k8sailor, teams.a, "80:8080", "!80:8080")
        changed = await applied(k8sailor, teams.a, "80:http", "#81:8080")
        listed = await k8sailor.list_services("web", namespace=teams.a)
        gone = await deleted(k8sailor, teams.a, all=True)

    assert made["web"][0] is Outcome.CREATED
    # Neither create nor update: refused before the Service is read, naming both.
    assert made["web-nodeport"] == (
        Outcome.DENIED,
        f"carol may not create services/nodeport in API group k8sailor.io in namespace "
        f'"{teams.a}" (resourceName "web"); carol may not update services/nodeport in API '
        f'group k8sailor.io in namespace "{teams.a}" (resourceName "web")',
    )
    assert changed["web"][0] is Outcome.UPDATED, changed
    outcome, error = changed["web-headless"]
    assert outcome is Outcome.DENIED
    assert error.startswith("carol may not create services/headless")
    assert "carol may not update services/headless" in error
    assert [(s.name, s.rule) for s in listed] == [("web", "80:http"), ("web-headless", "#80:8080")]
    assert gone["web"][0] is Outcome.DELETED
    assert gone["web-headless"][0] is Outcome.DENIED
    assert gone["web-headless"][1].startswith("carol may not delete services/headless")
    assert await service_names(api_client, teams.a) == {"web-headless"}


async def test_a_caller_who_may_not_list_every_type_present_gets_no_partial_list(
    serve: Serve, pki: Pki, teams: Teams, api_client: client.ApiClient
) -> None:
    await grant(api_client, teams.a, "erin", {"clusterip": ["list"]})
    erin = pki.ca.issue(common_name="erin")
    async with k8sailor_over(api_client) as admin:
        await applied(admin, teams.a, "80:8080", "!80:8080")

    async with serve(mtls(pki)) as target, as_caller(target, pki, erin) as k8sailor:
        with pytest.raises(RequestFailed) as raised:
            await k8sailor.list_services("web", namespace=teams.a)

    assert raised.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert raised.value.details.startswith("erin may not list services/nodeport")


async def test_a_caller_with_no_right_is_refused_before_anything_is_read(
    serve: Serve, pki: Pki, teams: Teams, api_client: client.ApiClient
) -> None:
    await grant(api_client, teams.b, "dave", {"clusterip": ["create", "list", "delete"]})
    dave = pki.ca.issue(common_name="dave")
    async with k8sailor_over(api_client) as admin:
        await applied(admin, teams.a, "80:8080")

    async with serve(mtls(pki)) as target, as_caller(target, pki, dave) as k8sailor:
        refusals = []
        for call in (
            k8sailor.list_services("web", namespace=teams.a),
            deleted(k8sailor, teams.a, all=True),
            applied(k8sailor, teams.a, "80:9090", prune=True),
        ):
            with pytest.raises(RequestFailed) as raised:
                await call
            refusals.append((raised.value.code, raised.value.details))

    assert [code for code, _ in refusals] == [grpc.StatusCode.PERMISSION_DENIED] * 3
    assert all(details.startswith("dave may do none of") for _, details in refusals), refusals
    assert "delete services/clusterip" in refusals[1][1]
    assert await service_names(api_client, teams.a) == {"web"}


async def service_type(api_client: client.ApiClient, namespace: str, name: str) -> str:
    service = await client.CoreV1Api(api_client).read_namespaced_service(name, namespace)
    kind: str = service.spec.type
    return kind


async def test_a_type_change_needs_delete_on_the_old_type_not_only_rights_on_the_new(
    serve: Serve, pki: Pki, teams: Teams, api_client: client.ApiClient
) -> None:
    # frank may do anything with ClusterIP Services, nothing with LoadBalancers.
    await grant(api_client, teams.a, "frank", {
        "clusterip": ["create", "update", "list", "delete"],
    })  # fmt: skip
    frank = pki.ca.issue(common_name="frank")
    async with k8sailor_over(api_client) as admin:
        assert (await applied(admin, teams.a, "web=^80:8080"))["web"][0] is Outcome.CREATED

    async with serve(mtls(pki)) as target, as_caller(target, pki, frank) as k8sailor:
        demoted = await applied(k8sailor, teams.a, "80:8080")
        dry = await applied(k8sailor, teams.a, "80:8080", dry_run=True)

    outcome, error = demoted["web"]
    assert outcome is Outcome.DENIED
    assert error.startswith(
        'Service "web" is of type LoadBalancer and the rule makes it ClusterIP: a change of type '
        "needs the rights to delete the one and create the other; frank may not delete "
        "services/loadbalancer in API group k8sailor.io"
    ), error
    assert "create services/clusterip" not in error  # frank may: only what is missing
    assert dry["web"] == demoted["web"]
    assert await service_type(api_client, teams.a, "web") == "LoadBalancer"


async def test_update_on_the_new_type_does_not_promote_a_service_to_it(
    serve: Serve, pki: Pki, teams: Teams, api_client: client.ApiClient
) -> None:
    # grace may create ClusterIP Services and update LoadBalancers, but not create one.
    await grant(api_client, teams.a, "grace", {
        "clusterip": ["create"],
        "loadbalancer": ["update"],
    })  # fmt: skip
    grace = pki.ca.issue(common_name="grace")

    async with serve(mtls(pki)) as target, as_caller(target, pki, grace) as k8sailor:
        made = await applied(k8sailor, teams.a, "80:8080")
        promoted = await applied(k8sailor, teams.a, "web=^80:8080")

    assert made["web"][0] is Outcome.CREATED
    outcome, error = promoted["web"]
    assert outcome is Outcome.DENIED
    missing = error.partition("the other; ")[2].split("; ")
    assert [m.split(" in API group")[0] for m in missing] == [
        "grace may not create services/loadbalancer",
        "grace may not delete services/clusterip",
    ], error
    assert await service_type(api_client, teams.a, "web") == "ClusterIP"


async def test_delete_on_the_old_type_and_create_on_the_new_are_enough_for_a_type_change(
    serve: Serve, pki: Pki, teams: Teams, api_client: client.ApiClient
) -> None:
    # heidi could delete the ClusterIP and create the LoadBalancer herself: she may change
    # one into the other in place, with no update right at all.
    await grant(api_client, teams.a, "heidi", {
        "clusterip": ["create", "delete"],
        "loadbalancer": ["create"],
    })  # fmt: skip
    heidi = pki.ca.issue(common_name="heidi")

    async with serve(mtls(pki)) as target, as_caller(target, pki, heidi) as k8sailor:
        made = await applied(k8sailor, teams.a, "80:8080")
        promoted = await applied(k8sailor, teams.a, "web=^80:8080")

    assert made["web"][0] is Outcome.CREATED
    assert promoted["web"][0] is Outcome.UPDATED, promoted
    assert await service_type(api_client, teams.a, "web") == "LoadBalancer"
