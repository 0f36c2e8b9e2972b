"""Every RPC sets its own fair share at the edge (server.kube.fairness), through a real server on
the real API server: each of a caller's RPCs, Create, List, Apply and Delete, and the
SubjectAccessReviews made for it, take their API call slots as one and the same share, the
caller's, never the background share of the Deployment cache's own calls, nor a second share
of the same name kept by the reviewer. Without an identity, each request is a share of its own.

tests/auth/test_turns.py looks at the shares' names; this looks at the shares themselves, which
the names alone cannot tell apart."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes_asyncio import client

from client import Client, Deleted, ExposedService, Outcome, Result, connect
from server.app import ServerConfig, serving
from server.kube.fairness import Share, current_share
from tests.auth.conftest import Pki, Teams, bind, request_token, service_account, tls
from tests.auth.conftest import service_account_subject as subject

BACKGROUND = "background"


Made = list[tuple[str, str, Share]]  # verb, resource, share
Rpc = Callable[[], Awaitable[list[str]]]  # an RPC, made once more each time it is called


@dataclass
class Shares:
    """A CallObserver writing down the share (the object) each API call took its slot as: it
    is told inside the call's slot, in the calling task's context."""

    calls: Made = field(default_factory=list)

    def call_started(self, verb: str, resource: str) -> None:
        self.calls.append((verb, resource, current_share()))

    def call_finished(self, verb: str, resource: str, code: str, seconds: float) -> None:
        pass

    def call_retried(self, verb: str, resource: str, reason: str) -> None:
        pass

    async def during(self, rpc: Awaitable[list[str]]) -> tuple[list[str], Made]:
        """What rpc answered, and the calls made while it ran but the Deployment cache's own
        list and watch, which are no caller's, and TokenReviews, which are made before there
        is a caller (they take the client address's turn, see tests/auth/test_turns.py)."""
        start = len(self.calls)
        answered = await rpc
        made = [
            (verb, resource, share)
            for verb, resource, share in self.calls[start:]
            if resource != "tokenreviews"
            and not (resource == "deployments" and verb in ("list", "watch"))
        ]
        return answered, made


async def outcomes(results: AsyncIterator[Result] | AsyncIterator[Deleted]) -> list[str]:
    return [result.outcome.name async for result in results]


async def names(listed: Awaitable[list[ExposedService]]) -> list[str]:
    return [service.name for service in await listed]


def rpcs(
    k8sailor: Client, ns: str
) -> dict[str, tuple[Callable[[], Awaitable[list[str]]], list[str]]]:
    """Each ExposureService RPC, in an order that leaves nothing behind, and what it answers."""
    return {
        "CreateServices": (
            lambda: outcomes(k8sailor.create_services("web", ["80"], namespace=ns)),
            [Outcome.CREATED.name],
        ),
        "ListServices": (lambda: names(k8sailor.list_services("web", namespace=ns)), ["web"]),
        "ApplyServices": (
            lambda: outcomes(k8sailor.apply_services("web", ["81"], namespace=ns)),
            [Outcome.UPDATED.name],
        ),
        "DeleteServices": (
            lambda: outcomes(k8sailor.delete_services("web", all=True, namespace=ns)),
            [Outcome.DELETED.name],
        ),
    }


async def test_each_rpc_of_a_caller_and_its_reviews_take_the_one_share_of_that_caller(
    api_client: client.ApiClient,
    pki: Pki,
    teams: Teams,
    caller_roles: list[str],
    tmp_path: Path,
) -> None:
    callers = ("deployer", "operator")
    tokens = {}
    for name in callers:
        await service_account(api_client, teams.a, name)
        await bind(api_client, teams.a, "k8sailor-expose-internal", subject(teams.a, name))
        tokens[name] = tmp_path / f"{name}.token"
        tokens[name].write_text(await request_token(api_client, teams.a, name, ["k8sailor"]))
    observed = Shares()
    config = ServerConfig(listen="127.0.0.1:0", auth=tls(pki))

    calls: dict[tuple[str, str], tuple[list[str], list[str], Made]] = {}
    async with serving(api_client, config, grace=0.5, observer=observed) as running:
        for name in callers:
            async with connect(
                f"127.0.0.1:{running.port}", root_certificates=pki.ca.pem, token_file=tokens[name]
            ) as k8sailor:
                for rpc, (call, expected) in rpcs(k8sailor, teams.a).items():
                    calls[name, rpc] = (expected, *await observed.during(call()))

    share_of: dict[str, Share] = {}
    for (name, rpc), (expected, answered, made) in calls.items():
        assert answered == expected, (name, rpc)
        # Each RPC was authorized (with its own verb: a review of its own) and reached the
        # Services, all in one share: the caller's.
        assert {"subjectaccessreviews", "services"} <= {resource for _, resource, _ in made}
        shares = {share for _, _, share in made}
        assert len(shares) == 1, (name, rpc, made)
        (share,) = shares
        assert share.name == f"system:serviceaccount:{teams.a}:{name}", (name, rpc)
        # The same share for every RPC of the caller, and for the reviews made for it.
        assert share_of.setdefault(name, share) is share, (name, rpc)
    assert share_of["deployer"] is not share_of["operator"]
    cache = {share.name for verb, resource, share in observed.calls
             if resource == "deployments" and verb in ("list", "watch")}  # fmt: skip
    assert cache == {BACKGROUND}


async def test_without_an_identity_each_request_is_a_share_of_its_own(
    api_client: client.ApiClient, teams: Teams
) -> None:
    observed = Shares()
    config = ServerConfig(listen="127.0.0.1:0")

    calls: list[tuple[str, list[str], list[str], Made]] = []
    async with (
        serving(api_client, config, grace=0.5, observer=observed) as running,
        connect(f"127.0.0.1:{running.port}") as k8sailor,
    ):
        rounds = [rpcs(k8sailor, teams.a), rpcs(k8sailor, teams.a)]  # each RPC twice
        for each in rounds:
            for rpc, (call, expected) in each.items():
                calls.append((rpc, expected, *await observed.during(call())))

    seen: list[Share] = []
    for rpc, expected, answered, made in calls:
        assert answered == expected, rpc
        assert "services" in {resource for _, resource, _ in made}, rpc
        shares = {share for _, _, share in made}
        assert len(shares) == 1, (rpc, made)
        (share,) = shares
        assert share.name == rpc
        # A new request, a new share: not one of the same name before it.
        assert all(share is not other for other in seen), rpc
        seen.append(share)
