"""Mutual TLS: who a client certificate names, and what RBAC then lets that caller do."""

from __future__ import annotations

import json
import logging

import grpc
import pytest
from kubernetes_asyncio import client

from client import Outcome, RequestFailed, connect
from tests.auth.conftest import (
    Pki,
    Serve,
    Teams,
    bind,
    grant_role,
    mtls,
    service_account_subject,
    service_names,
)
from tests.pki import Issued


async def expose(
    target: str,
    pki: Pki,
    identity: Issued,
    namespace: str,
    rules: list[str],
    deployment: str = "web",
) -> dict[str, tuple[Outcome, str, str]]:
    """rule -> (outcome, reason, error), over mutual TLS as identity."""
    async with connect(
        target,
        root_certificates=pki.ca.pem,
        certificate_chain=identity.certificate,
        private_key=identity.private_key,
    ) as k8sailor:
        return {
            result.rule: (result.outcome, result.reason, result.error)
            async for result in k8sailor.create_services(
                deployment, rules, namespace=namespace, timeout=20
            )
        }


async def test_without_a_client_certificate_the_handshake_fails(
    serve: Serve, pki: Pki, teams: Teams, api_client: client.ApiClient
) -> None:
    async with serve(mtls(pki)) as target, connect(target, root_certificates=pki.ca.pem) as k8s:
        with pytest.raises(RequestFailed) as raised:
            async for _ in k8s.create_services("web", ["80:8080"], namespace=teams.a, timeout=5):
                pass

    # The TLS handshake itself is refused: no RPC ever reaches the server.
    assert raised.value.code is grpc.StatusCode.UNAVAILABLE
    assert await service_names(api_client, teams.a) == set()


async def test_a_certificate_from_another_ca_is_refused(
    serve: Serve, pki: Pki, teams: Teams, api_client: client.ApiClient, caller_roles: list[str]
) -> None:
    # Even a name that RBAC would let in, when another CA vouches for it.
    await bind(api_client, teams.a, "k8sailor-expose-all", {"kind": "User", "name": "mallory",
               "apiGroup": "rbac.authorization.k8s.io"})  # fmt: skip
    stranger = pki.other_ca.issue(common_name="mallory")

    async with serve(mtls(pki)) as target:
        with pytest.raises(RequestFailed) as raised:
            await expose(target, pki, stranger, teams.a, ["80:8080"])

    assert raised.value.code is grpc.StatusCode.UNAVAILABLE
    assert await service_names(api_client, teams.a) == set()


async def test_a_spiffe_certificate_is_its_service_account_and_rbac_decides_per_rule(
    serve: Serve,
    pki: Pki,
    teams: Teams,
    api_client: client.ApiClient,
    caller_roles: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The caller is ServiceAccount "deployer" of team-a, allowed ClusterIP and headless there.
    await bind(api_client, teams.a, "k8sailor-expose-internal",
               service_account_subject(teams.a, "deployer"))  # fmt: skip
    svid = pki.ca.issue(uris=(f"spiffe://cluster.local/ns/{teams.a}/sa/deployer",))

    with caplog.at_level(logging.INFO, logger="k8sailor.requests"):
        async with serve(mtls(pki)) as target:
            in_a = await expose(target, pki, svid, teams.a, ["80:8080", "!80:8080"])
            with pytest.raises(RequestFailed) as raised:
                await expose(target, pki, svid, teams.b, ["80:8080"])

    assert in_a["80:8080"][0] is Outcome.CREATED
    outcome, reason, error = in_a["!80:8080"]
    assert (outcome, reason) == (Outcome.DENIED, "Forbidden")
    user = f"system:serviceaccount:{teams.a}:deployer"
    assert error == (
        f"{user} may not create services/nodeport in API group k8sailor.io in namespace "
        f'"{teams.a}" (resourceName "web")'
    )
    assert await service_names(api_client, teams.a) == {"web"}

    # No right at all in team-b: refused before the Deployment is read, nothing created.
    assert raised.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert raised.value.details.startswith(f"{user} may create none of the Service types")
    assert f'services/clusterip in API group k8sailor.io in namespace "{teams.b}"' in (
        raised.value.details
    )
    assert await service_names(api_client, teams.b) == set()

    lines = [json.loads(record.getMessage()) for record in caplog.records]
    assert [(line["namespace"], line["user"], line["authn"], line["denied"], line["status"])
            for line in lines] == [
        (teams.a, user, "spiffe", True, "OK"),
        (teams.b, user, "spiffe", True, "PERMISSION_DENIED"),
    ]  # fmt: skip
    assert lines[0]["groups"] == [
        "system:serviceaccounts",
        f"system:serviceaccounts:{teams.a}",
        "system:authenticated",
    ]


async def test_a_certificate_subject_is_a_user_and_its_organizations_are_groups(
    serve: Serve, pki: Pki, teams: Teams, api_client: client.ApiClient, caller_roles: list[str]
) -> None:
    # RBAC grants the group (the certificate's O), not the user (its CN).
    group = {"kind": "Group", "name": "platform", "apiGroup": "rbac.authorization.k8s.io"}
    await bind(api_client, teams.b, "k8sailor-expose-all", group)
    alice = pki.ca.issue(common_name="alice", organizations=("dev", "platform"))
    bob = pki.ca.issue(common_name="bob", organizations=("dev",))

    async with serve(mtls(pki)) as target:
        as_alice = await expose(target, pki, alice, teams.b, ["80:8080", "!80:8080"])
        with pytest.raises(RequestFailed) as raised:
            await expose(target, pki, bob, teams.b, ["#81:8080"])

    assert {rule: outcome for rule, (outcome, _, _) in as_alice.items()} == {
        "80:8080": Outcome.CREATED,
        "!80:8080": Outcome.CREATED,
    }
    assert raised.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert raised.value.details.startswith("bob may create none")


async def test_resource_names_limit_a_grant_to_some_deployments(
    serve: Serve, pki: Pki, teams: Teams, api_client: client.ApiClient
) -> None:
    carol = pki.ca.issue(common_name="carol")
    subject = {"kind": "User", "name": "carol", "apiGroup": "rbac.authorization.k8s.io"}
    await grant_role(api_client, teams.a, subject, ["clusterip"], resource_names=["api"])

    async with serve(mtls(pki)) as target:
        with pytest.raises(RequestFailed) as raised:
            await expose(target, pki, carol, teams.a, ["80:8080"])

    # Allowed for Deployment "api" only; "web" does not even get read.
    assert raised.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert await service_names(api_client, teams.a) == set()


async def test_only_invalid_rules_under_authorization_do_not_reveal_the_deployment(
    serve: Serve, pki: Pki, teams: Teams, api_client: client.ApiClient
) -> None:
    dave = pki.ca.issue(common_name="dave")

    async with serve(mtls(pki)) as target:
        results = await expose(target, pki, dave, teams.b, ["80:99999"])
        missing = await expose(target, pki, dave, teams.b, ["80:99999"], "no-such-deployment")

    # The same answer whether or not "web" exists there: the rule's own error, nothing read.
    ((outcome, reason, error),) = results.values()
    assert (outcome, reason) == (Outcome.INVALID, "RuleInvalid")
    assert "99999" in error
    assert missing == results


async def test_of_several_cns_the_last_is_the_user_as_kube_apiserver_reads_it(
    serve: Serve, pki: Pki, teams: Teams, api_client: client.ApiClient, caller_roles: list[str]
) -> None:
    # RBAC grants alice. Go's crypto/x509 (and so kube-apiserver) takes the last CN.
    subject = {"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}
    await bind(api_client, teams.a, "k8sailor-expose-internal", subject)
    last_alice = pki.ca.issue(common_name="mallory", more_common_names=("alice",))
    first_alice = pki.ca.issue(common_name="alice", more_common_names=("mallory",))

    async with serve(mtls(pki)) as target:
        as_alice = await expose(target, pki, last_alice, teams.a, ["80:8080"])
        with pytest.raises(RequestFailed) as raised:
            await expose(target, pki, first_alice, teams.a, ["81:8080"])

    assert as_alice["80:8080"][0] is Outcome.CREATED
    assert raised.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert raised.value.details.startswith("mallory may create none")


async def test_a_spiffe_id_from_another_trust_domain_is_refused_whatever_the_cn(
    serve: Serve, pki: Pki, teams: Teams, api_client: client.ApiClient, caller_roles: list[str]
) -> None:
    # alice may expose here, but a spiffe: URI SAN is read alone: not passed on to the CN.
    subject = {"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}
    await bind(api_client, teams.a, "k8sailor-expose-internal", subject)
    stranger = pki.ca.issue(
        common_name="alice", uris=(f"spiffe://other.example/ns/{teams.a}/sa/deployer",)
    )

    async with serve(mtls(pki)) as target:
        with pytest.raises(RequestFailed) as raised:
            await expose(target, pki, stranger, teams.a, ["80:8080"])

    assert raised.value.code is grpc.StatusCode.UNAUTHENTICATED
    assert raised.value.details == (
        f"SPIFFE ID 'spiffe://other.example/ns/{teams.a}/sa/deployer' is from trust domain "
        "'other.example', which this server does not believe (it believes cluster.local: "
        "--spiffe-trust-domain)"
    )
    assert await service_names(api_client, teams.a) == set()


async def test_every_trust_domain_of_the_repeated_flag_is_believed(
    serve: Serve, pki: Pki, teams: Teams, api_client: client.ApiClient, caller_roles: list[str]
) -> None:
    await bind(api_client, teams.a, "k8sailor-expose-internal",
               service_account_subject(teams.a, "deployer"))  # fmt: skip
    domains = ("cluster.local", "east.example")
    svids = [
        pki.ca.issue(uris=(f"spiffe://{domain}/ns/{teams.a}/sa/deployer",)) for domain in domains
    ]

    async with serve(mtls(pki, spiffe_trust_domains=domains)) as target:
        results = [await expose(target, pki, svid, teams.a, ["80:8080"]) for svid in svids]

    # Both authorized as the same ServiceAccount: the second finds the first one's Service.
    assert [outcome for result in results for outcome, _, _ in result.values()] == [
        Outcome.CREATED,
        Outcome.UNCHANGED,
    ]


@pytest.mark.parametrize(
    ("common_name", "organizations", "field"),
    [
        ("alice", ("system:masters",), "O='system:masters'"),
        ("system:serviceaccount:kube-system:deployment-controller", (), "CN='system:"),
    ],
)
async def test_a_certificate_subject_may_not_claim_a_reserved_system_name(
    serve: Serve,
    pki: Pki,
    teams: Teams,
    api_client: client.ApiClient,
    common_name: str,
    organizations: tuple[str, ...],
    field: str,
) -> None:
    # No binding at all: before, system:masters made the API server allow every review.
    forged = pki.ca.issue(common_name=common_name, organizations=organizations)

    async with serve(mtls(pki)) as target:
        with pytest.raises(RequestFailed) as raised:
            await expose(target, pki, forged, teams.a, ["80:8080"])

    assert raised.value.code is grpc.StatusCode.UNAUTHENTICATED
    assert field in raised.value.details
    assert "SPIFFE ID" in raised.value.details
    assert await service_names(api_client, teams.a) == set()
