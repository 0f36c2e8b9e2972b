"""AccessControl.rights, the one question every RPC asks of authorization, against a reviewer
that answers from a table (the SubjectAccessReviews themselves run in tests/auth)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import pytest

from server.auth.access import Decision
from server.auth.errors import Forbidden
from server.auth.gate import AccessControl
from server.auth.identity import Caller, Method
from server.auth.settings import Authorization, AuthSettings
from server.kube import Kube
from server.kube.fairness import Shares
from server.rules import ServiceType

ALICE = Caller("alice", (), Method.CERTIFICATE)
CLUSTER_IP, NODE_PORT = ServiceType.CLUSTER_IP, ServiceType.NODE_PORT


class TableReviewer:
    """Allows exactly the (verb, type) pairs it is given, and notes what it was asked."""

    def __init__(self, allowed: set[tuple[str, ServiceType]]) -> None:
        self.allowed = allowed
        self.asked: list[tuple[str, frozenset[ServiceType]]] = []

    async def decide(
        self,
        caller: Caller,
        namespace: str,
        deployment: str,
        types: Iterable[ServiceType],
        verb: str = "create",
    ) -> dict[ServiceType, Decision]:
        wanted = frozenset(types)
        self.asked.append((verb, wanted))
        return {t: Decision((verb, t) in self.allowed) for t in sorted(wanted)}


def control(allowed: set[tuple[str, ServiceType]], *, rbac: bool = True) -> AccessControl:
    mode = Authorization.RBAC if rbac else Authorization.NONE
    access = AccessControl(cast(Kube, None), AuthSettings(authorization=mode), shares=Shares())
    access.access = cast(Any, TableReviewer(allowed))
    return access


async def test_with_authorization_off_nothing_is_asked() -> None:
    access = control(set(), rbac=False)
    assert await access.rights(ALICE, "team", "web", {("create", CLUSTER_IP)}) is None
    assert cast(TableReviewer, access.access).asked == []


async def test_nothing_wanted_asks_nothing_and_refuses_fail_closed() -> None:
    access = control(set())
    rights = await access.rights(ALICE, "team", "web", set())
    assert rights is not None
    assert cast(TableReviewer, access.access).asked == []
    assert rights.refusal("create", CLUSTER_IP) is not None  # never asked: refused


async def test_create_asks_one_review_per_verb_and_keeps_its_wording() -> None:
    access = control(set())
    wanted = {("create", CLUSTER_IP)}
    none_allowed = "create none of the Service types this request asks for"
    with pytest.raises(Forbidden) as raised:
        await access.rights(ALICE, "team", "web", wanted, none_allowed=none_allowed)
    assert str(raised.value) == (
        "alice may create none of the Service types this request asks for: it needs create "
        'services/clusterip in API group k8sailor.io in namespace "team" (resourceName "web")'
    )
    assert cast(TableReviewer, access.access).asked == [("create", frozenset({CLUSTER_IP}))]


async def test_a_lifecycle_refusal_names_every_pair_it_needs_one_of() -> None:
    access = control(set())
    with pytest.raises(Forbidden) as raised:
        await access.rights(ALICE, "team", "web", {("list", CLUSTER_IP), ("list", NODE_PORT)})
    message = str(raised.value)
    assert message.startswith("alice may do none of what this request asks: it needs one of list")
    assert "services/nodeport" in message


async def test_partly_allowed_rights_tell_each_pair_and_ask_more() -> None:
    access = control({("create", CLUSTER_IP), ("delete", NODE_PORT)})
    wanted = {("create", CLUSTER_IP), ("create", NODE_PORT)}
    rights = await access.rights(ALICE, "team", "web", wanted)
    assert rights is not None
    assert rights.refusal("create", CLUSTER_IP) is None
    assert "may not create services/nodeport" in (rights.refusal("create", NODE_PORT) or "")
    assert rights.refusal("update", CLUSTER_IP) is not None  # never asked: refused
    later, unknown = await rights.refusals([("delete", NODE_PORT), ("delete", CLUSTER_IP)])
    assert (list(later), unknown) == ([("delete", CLUSTER_IP)], "")
