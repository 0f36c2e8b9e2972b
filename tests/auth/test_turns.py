"""Whose turn each API call takes for k8sailor's API call slots (server.kube.fairness), through a
real server on the real API server: a review as its connection's or its caller's own share,
each RPC's calls as its caller's, and nothing a caller does as the background share that the
Deployment cache's own calls use. In one background share they waited first come, first served
behind each other: a flood of tokens, or one big Apply, held up everyone's authentication."""

from __future__ import annotations

from pathlib import Path

from kubernetes_asyncio import client

from client import Outcome, connect
from server.app import ServerConfig, serving
from tests.auth.conftest import Pki, Teams, bind, request_token, service_account, tls
from tests.auth.conftest import service_account_subject as subject
from tests.turns import Turns

BACKGROUND = "background"


async def test_reviews_and_every_rpc_take_turns_of_their_own(
    api_client: client.ApiClient,
    pki: Pki,
    teams: Teams,
    caller_roles: list[str],
    tmp_path: Path,
) -> None:
    await service_account(api_client, teams.a, "deployer")
    await bind(api_client, teams.a, "k8sailor-expose-internal", subject(teams.a, "deployer"))
    token_file = tmp_path / "token"
    token_file.write_text(await request_token(api_client, teams.a, "deployer", ["k8sailor"]))
    turns = Turns()
    config = ServerConfig(listen="127.0.0.1:0", auth=tls(pki))

    async with (
        serving(api_client, config, grace=0.5, observer=turns) as running,
        connect(
            f"127.0.0.1:{running.port}", root_certificates=pki.ca.pem, token_file=token_file
        ) as k8sailor,
    ):
        ns = teams.a
        created = [r.outcome async for r in k8sailor.create_services("web", ["80"], namespace=ns)]
        listed = await k8sailor.list_services("web", namespace=ns)
        applied = [r.outcome async for r in k8sailor.apply_services("web", ["81"], namespace=ns)]
        deleted = [d.outcome async for d in k8sailor.delete_services("web", all=True, namespace=ns)]

    assert created == [Outcome.CREATED]
    assert [s.name for s in listed] == ["web"]
    assert applied == [Outcome.UPDATED]
    assert deleted == [Outcome.DELETED]
    (connection,) = turns.shares("tokenreviews")
    assert connection.startswith("ipv4:127.0.0.1:")
    assert turns.shares("subjectaccessreviews") == {f"system:serviceaccount:{teams.a}:deployer"}
    # Create, List, Apply and Delete: the caller's calls take the caller's turn, whichever
    # request makes them (more requests at once buy no more turns), none background; the
    # Deployment cache's list and watch, which are no caller's, are.
    requests = turns.shares("services")
    assert requests == {f"system:serviceaccount:{teams.a}:deployer"}
    cache = {share for verb, resource, share in turns.calls if verb in ("list", "watch")
             and resource == "deployments"}  # fmt: skip
    assert cache == {BACKGROUND}
