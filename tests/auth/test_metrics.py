"""Authentication and authorization decisions, counted in /metrics by result."""

from __future__ import annotations

import pytest
from kubernetes_asyncio import client

from client import Outcome, RequestFailed
from server.app import ServerConfig, serving
from tests.auth.conftest import Pki, Teams, bind, mtls, service_account_subject
from tests.auth.test_certificates import expose
from tests.metrics import delta, scrape


async def test_decisions_are_counted_by_result(
    pki: Pki, teams: Teams, api_client: client.ApiClient, caller_roles: list[str]
) -> None:
    # ServiceAccount "deployer" of team-a may create ClusterIP and headless Services there.
    await bind(api_client, teams.a, "k8sailor-expose-internal",
               service_account_subject(teams.a, "deployer"))  # fmt: skip
    svid = pki.ca.issue(uris=(f"spiffe://cluster.local/ns/{teams.a}/sa/deployer",))
    config = ServerConfig(listen="127.0.0.1:0", auth=mtls(pki), metrics_listen="127.0.0.1:0")

    async with serving(api_client, config, grace=0.5) as running:
        port = running.telemetry.metrics_port
        assert port is not None
        target = f"127.0.0.1:{running.port}"
        before = scrape(port)
        allowed = await expose(target, pki, svid, teams.a, ["80:8080"])
        partly = await expose(target, pki, svid, teams.a, ["81:8080", "!81:8080"])
        with pytest.raises(RequestFailed):
            await expose(target, pki, svid, teams.b, ["80:8080"])
        after = scrape(port)

    assert allowed["80:8080"][0] is Outcome.CREATED
    assert partly["!81:8080"][0] is Outcome.DENIED

    assert delta(before, after, "k8sailor_authentications_total", method="spiffe", result="ok") == 3
    for result, count in (("allowed", 1), ("partly_denied", 1), ("denied", 1), ("error", 0)):
        assert delta(before, after, "k8sailor_authorizations_total", result=result) == count
    # The denied rule, by type and reason.
    denied = {"type": "NodePort", "outcome": "DENIED", "reason": "Forbidden"}
    denied["grpc_method"] = "CreateServices"
    assert delta(before, after, "k8sailor_rules_total", **denied) == 1
    # The SubjectAccessReviews are API calls like any other: one per (namespace, type) asked
    # about, ClusterIP in team-a being answered from the cache the second time.
    reviews = {"verb": "create", "resource": "subjectaccessreviews", "code": "201"}
    assert delta(before, after, "k8sailor_kube_requests_total", **reviews) == 3
