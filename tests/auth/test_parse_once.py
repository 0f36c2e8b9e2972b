"""Under authorization a request's rules are parsed once: the types that RBAC decides on and
the Services that are built come from the same parse, done in slices (server.domain.cooperative)."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client

import server.domain.requests
from client import Outcome
from server.rules import parse_any
from tests.auth.conftest import Pki, Serve, Teams, grant_role, mtls
from tests.auth.test_certificates import expose


async def test_each_rule_is_parsed_once_with_rbac_on(
    serve: Serve,
    pki: Pki,
    teams: Teams,
    api_client: client.ApiClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    subject = {"kind": "User", "name": "erin", "apiGroup": "rbac.authorization.k8s.io"}
    await grant_role(api_client, teams.a, subject, ["clusterip"])
    erin = pki.ca.issue(common_name="erin")
    parsed: list[object] = []

    def counting(rule: object, *args: Any) -> Any:
        parsed.append(rule)
        return parse_any(rule, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(server.domain.requests, "parse_any", counting)
    rules = ["80:8080", "!80:8080", "80:99999"]

    async with serve(mtls(pki)) as target:
        results = await expose(target, pki, erin, teams.a, rules)

    assert {rule: outcome for rule, (outcome, _, _) in results.items()} == {
        "80:8080": Outcome.CREATED,
        "!80:8080": Outcome.DENIED,
        "80:99999": Outcome.INVALID,
    }
    assert parsed == rules
