"""Under authorization a request's rules are parsed once: the types that RBAC decides on and
the Services that are built come from the same parse, done in slices (server.domain.cooperative).

Seen from outside the way the operator's configuration sees it: parsing an ExternalName rule
asks the operator's ExternalName policy (--allow-external-name) about its target, so a server
whose policy notes what it is asked shows how often each rule was parsed."""

from __future__ import annotations

from dataclasses import dataclass, field

from kubernetes_asyncio import client

from client import Outcome
from server.app import ServerConfig, serving
from server.domain.settings import Settings
from server.rules import ExternalNamePolicy
from tests.auth.conftest import Pki, Teams, grant_role, mtls
from tests.auth.test_certificates import expose


@dataclass(frozen=True)
class NotingPolicy(ExternalNamePolicy):
    """The operator's ExternalName policy, noting each target it is asked to judge."""

    asked: list[str] = field(default_factory=list, compare=False)

    def allows(self, name: str) -> bool:
        self.asked.append(name)
        return super().allows(name)


@dataclass(frozen=True)
class NotingConfig(ServerConfig):
    """A server configuration whose ExternalName policy is a NotingPolicy."""

    policy: NotingPolicy = field(default_factory=NotingPolicy, compare=False)

    @property
    def settings(self) -> Settings:
        return Settings(
            max_rules=self.max_rules, node_ports=self.node_ports, external_names=self.policy
        )


async def test_each_rule_is_parsed_once_with_rbac_on(
    pki: Pki, teams: Teams, api_client: client.ApiClient
) -> None:
    subject = {"kind": "User", "name": "erin", "apiGroup": "rbac.authorization.k8s.io"}
    await grant_role(api_client, teams.a, subject, ["externalname"])
    erin = pki.ca.issue(common_name="erin")
    policy = NotingPolicy(allowed=("corp.example",))
    config = NotingConfig(listen="127.0.0.1:0", auth=mtls(pki), policy=policy)
    rules = ["@db.corp.example", "80:8080", "80:99999"]

    async with serving(api_client, config, grace=0.5) as running:
        results = await expose(f"127.0.0.1:{running.port}", pki, erin, teams.a, rules)

    assert {rule: outcome for rule, (outcome, _, _) in results.items()} == {
        "@db.corp.example": Outcome.CREATED,
        "80:8080": Outcome.DENIED,
        "80:99999": Outcome.INVALID,
    }
    # Authorized on the types of that one parse, and built from it.
    assert policy.asked == ["db.corp.example"]
