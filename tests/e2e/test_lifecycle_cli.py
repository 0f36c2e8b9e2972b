"""`k8sailor get|delete|apply` as people run them: the installed command against the real
server and API server, its tables, diff, JSON lines and exit statuses."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from tests.e2e.test_lifecycle import kubectl, run_kubectl

__all__ = ["kubectl"]  # the fixture, shared from there

BIN = Path(sys.executable).parent


async def k8sailor(target: str, namespace: str, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(BIN / "k8sailor"), *args, "-n", namespace, "--server", target,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def service_names(api_client: client.ApiClient, namespace: str) -> set[str]:
    listed = await client.CoreV1Api(api_client).list_namespaced_service(namespace)
    return {item.metadata.name for item in listed.items}


async def test_the_lifecycle_apply_get_change_prune_delete(
    target: str, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    code, out, err = await k8sailor(target, namespace, "apply", "web", "80:8088", "#80:80")
    assert code == 0, err
    # One line per rule, in the order they finish.
    assert sorted(out.splitlines()) == [
        "created              web  (rule 0: 80:8088)",
        "created              web-headless  (rule 1: #80)",
    ]

    code, out, err = await k8sailor(target, namespace, "get", "web")
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "TYPE", "CLUSTER-IP", "PORTS", "RULE"]
    cells = [row.split() for row in rows]
    assert [(c[0], c[1], c[3], c[4]) for c in cells] == [
        ("web", "CLUSTER_IP", "80:8088/TCP", "80:8088"),
        ("web-headless", "HEADLESS", "80:80/TCP", "#80"),
    ]
    assert cells[1][2] == "None"

    code, out, err = await k8sailor(target, namespace, "apply", "web", "80:9090", "--dry-run")
    assert code == 0, err
    assert out.splitlines() == [
        "updated (dry run)    web  (rule 0: 80:9090)",
        '  - metadata.annotations["k8sailor.io/rule"]: 80:8088',
        '  + metadata.annotations["k8sailor.io/rule"]: 80:9090',
        "  - spec.ports[0].name: 80-8088",
        "  + spec.ports[0].name: 80-9090",
        "  - spec.ports[0].targetPort: 8088",
        "  + spec.ports[0].targetPort: 9090",
    ]

    code, out, err = await k8sailor(target, namespace, "apply", "web", "80:9090", "--prune")
    assert code == 0, err
    lines = out.splitlines()
    updated = lines.index("updated              web  (rule 0: 80:9090)")
    assert lines[updated + 5 : updated + 7] == [
        "  - spec.ports[0].targetPort: 8088",
        "  + spec.ports[0].targetPort: 9090",
    ]
    assert "deleted              web-headless  (pruned: #80)" in lines
    assert len(lines) == 8
    assert await service_names(api_client, namespace) == {"web"}

    code, out, err = await k8sailor(target, namespace, "delete", "web", "--all", "--json")
    assert code == 0, err
    assert [json.loads(line) for line in out.splitlines()] == [
        {"service": "web", "outcome": "DELETED", "error": "", "reason": ""}
    ]
    assert await service_names(api_client, namespace) == set()


async def test_apply_json_lines_carry_the_changes_and_a_failed_rule_exits_1(
    target: str, namespace: str, deployment: dict[str, Any]
) -> None:
    code, _, err = await k8sailor(target, namespace, "apply", "web", "80:8088")
    assert code == 0, err

    code, out, _ = await k8sailor(
        target, namespace, "apply", "web", "81:8088", "!99999:80:8088", "--json"
    )

    assert code == 1
    by_index = {line["index"]: line for line in map(json.loads, out.splitlines())}
    assert by_index[0]["outcome"] == "UPDATED"
    assert {"path": "spec.ports[0].port", "before": "80", "after": "81"} in by_index[0]["changes"]
    assert by_index[1]["outcome"] == "INVALID"
    assert "node port 99999 is outside 30000-32767" in by_index[1]["error"]


async def test_get_json_and_delete_of_a_missing_name_exits_1(
    target: str, namespace: str, deployment: dict[str, Any]
) -> None:
    code, _, err = await k8sailor(target, namespace, "apply", "web", "!31234:80:8088")
    assert code == 0, err

    code, out, err = await k8sailor(target, namespace, "get", "web", "--json")
    assert code == 0, err
    (listed,) = map(json.loads, out.splitlines())
    assert (listed["name"], listed["type"], listed["rule"]) == (
        "web-nodeport",
        "NODE_PORT",
        "!31234:80:8088",
    )
    assert listed["ports"][0]["node_port"] == 31234

    code, out, _ = await k8sailor(target, namespace, "delete", "web", "web-nodeport", "nope")

    assert code == 1
    lines = sorted(out.splitlines())
    assert lines[0] == "deleted            web-nodeport"
    assert lines[1].startswith("not found          nope  "), lines
    assert 'Deployment "web" has no Service "nope"' in lines[1]


async def test_a_missing_deployment_and_a_wrong_delete_line_exit_2(
    target: str, namespace: str
) -> None:
    code, out, err = await k8sailor(target, namespace, "get", "web")
    assert (code, out) == (2, "")
    assert 'NOT_FOUND: Deployment "web" not found' in err
    assert "Traceback" not in err

    code, _, err = await k8sailor(target, namespace, "delete", "web")
    assert code == 2
    assert "nothing to delete: give NAME... or --all" in err


async def test_a_field_kubectl_changed_is_a_conflict_until_apply_force(
    target: str, namespace: str, deployment: dict[str, Any], kubectl: list[str]
) -> None:
    code, _, err = await k8sailor(target, namespace, "apply", "web", "80:8088")
    assert code == 0, err
    patch = {"spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 7070}]}}
    await run_kubectl(kubectl, "-n", namespace, "patch", "service", "web", "-p", json.dumps(patch))

    code, out, _ = await k8sailor(target, namespace, "apply", "web", "80:9090")

    assert code == 1
    head, error = out.splitlines()
    assert head == "conflict             web  (rule 0: 80:9090)"
    assert error.startswith("  ! fields of Service 'web' are owned by another field manager")
    assert '"kubectl-patch"' in error

    code, out, err = await k8sailor(target, namespace, "apply", "web", "80:9090", "--force")

    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "updated              web  (rule 0: 80:9090)"
    assert "  - spec.ports[0].targetPort: 7070" in lines
    assert "  + spec.ports[0].targetPort: 9090" in lines


async def test_text_from_the_server_reaches_the_terminal_escaped(
    target: str, namespace: str, deployment: dict[str, Any]
) -> None:
    """A rule echoed back in an error, with a terminal escape and a bidi override in it."""
    hostile = "80:\x1b]0;owned\x07\u202e8088"
    outputs = []
    for command in (["apply", "web", hostile], ["expose", "web", hostile]):
        code, out, err = await k8sailor(target, namespace, *command)
        assert code == 1, err
        for text in (out, err):
            assert "\x1b" not in text
            assert "\x07" not in text
            assert "\u202e" not in text
        outputs.append(out)
    # What apply echoed, escaped as the Go CLI and the server write it.
    assert "\\u001b]0;owned\\u0007\\u202e8088" in outputs[0]
