"""`k8sailor-go get|delete|apply` against the in-process server on the real kube-apiserver:
the Go client's lifecycle methods through the command that uses them."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from tests.e2e.test_go_client import Finished, k8sailor_go, run
from tests.e2e.test_lifecycle import kubectl, run_kubectl

__all__ = ["k8sailor_go", "kubectl"]  # fixtures, shared from there

Command = Callable[..., Awaitable[Finished]]


@pytest.fixture
def go(k8sailor_go: Path, target: str, namespace: str) -> Command:
    """`await go("apply", *args)`: k8sailor-go SUBCOMMAND on the Deployment "web"."""

    def command(subcommand: str, *args: str) -> Awaitable[Finished]:
        return run(k8sailor_go, subcommand, "--server", target, "-n", namespace, "web", *args)

    return command


async def service_names(api_client: client.ApiClient, namespace: str) -> set[str]:
    listed = await client.CoreV1Api(api_client).list_namespaced_service(namespace)
    return {item.metadata.name for item in listed.items}


async def test_the_lifecycle_apply_get_change_prune_delete(
    go: Command, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    created = await go("apply", "80:8088", "#80:80")
    assert created.code == 0, created
    assert sorted(created.out.splitlines()) == [
        "created              web  (rule 0: 80:8088)",
        "created              web-headless  (rule 1: #80)",
    ]

    listed = await go("get")
    assert listed.code == 0, listed
    header, *rows = listed.out.splitlines()
    assert header.split() == ["NAME", "TYPE", "CLUSTER-IP", "PORTS", "RULE"]
    cells = [row.split() for row in rows]
    assert [(c[0], c[1], c[3], c[4]) for c in cells] == [
        ("web", "CLUSTER_IP", "80:8088/TCP", "80:8088"),
        ("web-headless", "HEADLESS", "80:80/TCP", "#80"),
    ]

    preview = await go("apply", "80:9090", "--dry-run")
    assert preview.code == 0, preview
    assert preview.out.splitlines() == [
        "updated (dry run)    web  (rule 0: 80:9090)",
        '  - metadata.annotations["k8sailor.io/rule"]: 80:8088',
        '  + metadata.annotations["k8sailor.io/rule"]: 80:9090',
        "  - spec.ports[0].name: 80-8088",
        "  + spec.ports[0].name: 80-9090",
        "  - spec.ports[0].targetPort: 8088",
        "  + spec.ports[0].targetPort: 9090",
    ]
    assert await service_names(api_client, namespace) == {"web", "web-headless"}

    pruned = await go("apply", "80:9090", "--prune", "--json")
    assert pruned.code == 0, pruned
    by_name = {line["serviceName"]: line for line in map(json.loads, pruned.out.splitlines())}
    assert by_name["web"]["outcome"] == "OUTCOME_UPDATED"
    assert {"path": "spec.ports[0].targetPort", "before": "8088", "after": "9090"} in by_name[
        "web"
    ]["changes"]
    assert (by_name["web-headless"]["index"], by_name["web-headless"]["outcome"]) == (
        -1,
        "OUTCOME_DELETED",
    )
    assert await service_names(api_client, namespace) == {"web"}

    deleted = await go("delete", "--all")
    assert deleted.code == 0, deleted
    assert deleted.out.splitlines() == ["deleted            web"]
    assert await service_names(api_client, namespace) == set()


async def test_delete_reports_a_missing_name_and_exits_1(
    go: Command, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    assert (await go("apply", "80:8088")).code == 0

    finished = await go("delete", "web", "nope", "--json")

    assert finished.code == 1, finished
    outcomes = {r["serviceName"]: r["outcome"] for r in map(json.loads, finished.out.splitlines())}
    assert outcomes == {"web": "OUTCOME_DELETED", "nope": "OUTCOME_NOT_FOUND"}
    assert await service_names(api_client, namespace) == set()


async def test_get_for_a_missing_deployment_exits_2_with_not_found(go: Command) -> None:
    finished = await go("get")

    assert finished.code == 2, finished
    assert finished.err.startswith("k8sailor-go: NOT_FOUND: "), finished.err
    assert finished.out == ""


async def test_delete_without_names_or_all_is_a_usage_error(go: Command) -> None:
    finished = await go("delete")

    assert finished.code == 2, finished
    assert "give the Services' names or --all" in finished.err


async def test_a_field_kubectl_changed_is_a_conflict_until_apply_force(
    go: Command, namespace: str, deployment: dict[str, Any], kubectl: list[str]
) -> None:
    assert (await go("apply", "80:8088")).code == 0
    patch = {"spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 7070}]}}
    await run_kubectl(kubectl, "-n", namespace, "patch", "service", "web", "-p", json.dumps(patch))

    refused = await go("apply", "80:9090")

    assert refused.code == 1, refused
    head, error = refused.out.splitlines()
    assert head == "conflict             web  (rule 0: 80:9090)"
    assert '"kubectl-patch"' in error, error
    assert "apply with force to take them over" in error

    forced = await go("apply", "80:9090", "--force", "--json")

    assert forced.code == 0, forced
    (result,) = map(json.loads, forced.out.splitlines())
    assert result["outcome"] == "OUTCOME_UPDATED"
    assert {"path": "spec.ports[0].targetPort", "before": "7070", "after": "9090"} in result[
        "changes"
    ]


async def test_text_from_the_server_reaches_the_terminal_escaped(
    go: Command, deployment: dict[str, Any]
) -> None:
    """A rule echoed back in an error, with a terminal escape and a bidi override in it."""
    applied = await go("apply", "80:\x1b]0;owned\x07\u202e8088")
    assert applied.code == 1, applied
    for text in (applied.out, applied.err):
        assert "\x1b" not in text
        assert "\x07" not in text
        assert "\u202e" not in text
    assert "\\u001b]0;owned\\u0007\\u202e8088" in applied.out
