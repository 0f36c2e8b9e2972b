"""ApplyServices is authorized before it reads anything, whatever its rules: one whose rules
all fail to parse names no Service type, and is then asked about every type."""

from __future__ import annotations

import grpc
import pytest
from kubernetes_asyncio import client

from client import Outcome, RequestFailed
from tests.auth.conftest import Pki, Serve, Teams, mtls
from tests.auth.test_lifecycle_rbac import applied, as_caller, grant


async def test_a_caller_with_no_right_learns_nothing_from_unparsable_rules(
    serve: Serve, pki: Pki, teams: Teams
) -> None:
    dave = pki.ca.issue(common_name="dave")
    refusals = []

    async with serve(mtls(pki)) as target, as_caller(target, pki, dave) as k8sailor:
        # "web" exists in team-a; "gone" does not.
        for deployment in ("web", "gone"):
            with pytest.raises(RequestFailed) as raised:
                async for _ in k8sailor.apply_services(
                    deployment, ["80:99999", "x"], namespace=teams.a
                ):
                    pass
            refusals.append((raised.value.code, raised.value.details.replace(deployment, "D")))

    assert refusals[0] == refusals[1]
    code, details = refusals[0]
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert details.startswith("dave may do none of what this request asks"), details
    assert "create services/clusterip" in details


async def test_a_caller_with_some_right_still_gets_each_rule_s_error(
    serve: Serve, pki: Pki, teams: Teams, api_client: client.ApiClient
) -> None:
    await grant(api_client, teams.a, "carol", {"clusterip": ["create", "update"]})
    carol = pki.ca.issue(common_name="carol")

    async with serve(mtls(pki)) as target, as_caller(target, pki, carol) as k8sailor:
        results = await applied(k8sailor, teams.a, "80:99999")

    ((outcome, error),) = results.values()
    assert outcome is Outcome.INVALID
    assert "99999" in error
