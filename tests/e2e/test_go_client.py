"""The Go client against the real server: `k8sailor-go`, built from client/go, talks to the
in-process grpc.aio server on the real kube-apiserver, and the Go example in the README
compiles inside the client/go module.

The server runs in this test's event loop, so the Go programs run as asyncio subprocesses:
a blocking subprocess call would stop the very server they talk to. Without `go` these tests
fail: the Go client is part of the product, not an optional extra.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import re
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from tests.controlplane import free_port
from tests.e2e.conftest import SELECTOR

REPO = Path(__file__).resolve().parents[2]
GO_MODULE = REPO / "client" / "go"
FOUR_RULES = ["80:8088", "#80:80", "!31234:80:8088", "@www.example.com"]
HEADER = ["INDEX", "OUTCOME", "SERVICE", "CLUSTER-IP", "PORTS", "ERROR"]
# A fresh machine downloads grpc and protobuf from the module proxy before the first build.
BUILD_TIMEOUT = 600.0
RUN_TIMEOUT = 60.0
RESOLVER = {
    "name": "resolver",
    "type": "SERVICE_TYPE_CLUSTER_IP",
    "ports": [{"port": 53, "targetPortName": "dns", "protocol": "PROTOCOL_UDP"}],
}


@dataclass(frozen=True)
class Finished:
    """A finished process: exit status and what it printed."""

    code: int
    out: str
    err: str

    def rows(self) -> dict[int, list[str]]:
        """The table under the header, by index; each row as its six columns (the last,
        ERROR, may have spaces; the others never do)."""
        header, *rows = self.out.splitlines()
        assert header.split() == HEADER, self.out
        cells = [row.split(maxsplit=5) for row in rows]
        return {int(row[0]): row + [""] * (6 - len(row)) for row in cells}


def go_tool() -> str:
    go = shutil.which("go")
    if go is None:
        pytest.fail(
            "`go` is not on PATH: the Go toolchain (>= 1.26) is needed to build and test the "
            "Go client in client/go",
            pytrace=False,
        )
    return go


async def run(*args: str | Path, cwd: Path | None = None, timeout: float = RUN_TIMEOUT) -> Finished:
    process = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "GOWORK": "off"},
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"{' '.join(map(str, args))} did not finish in {timeout:.0f}s")
    assert process.returncode is not None
    return Finished(process.returncode, out.decode(), err.decode())


@pytest.fixture(scope="session")
async def k8sailor_go(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The k8sailor-go command, built once per session outside the repository."""
    binary = tmp_path_factory.mktemp("go-client") / "k8sailor-go"
    built = await run(
        go_tool(), "build", "-o", binary, "./cmd/k8sailor-go", cwd=GO_MODULE, timeout=BUILD_TIMEOUT
    )
    assert built.code == 0, f"go build ./cmd/k8sailor-go failed:\n{built.err}"
    return binary


Expose = Callable[..., Awaitable[Finished]]


@pytest.fixture
def expose(k8sailor_go: Path, target: str, namespace: str) -> Expose:
    """k8sailor-go on the Deployment "web" of the test's namespace, against the test's server:
    `await expose(*args)`."""

    def expose(*args: str) -> Awaitable[Finished]:
        return run(k8sailor_go, "--server", target, "-n", namespace, "web", *args)

    return expose


async def services(api_client: client.ApiClient, namespace: str) -> dict[str, Any]:
    listed = await client.CoreV1Api(api_client).list_namespaced_service(namespace)
    return {item.metadata.name: item for item in listed.items}


async def test_four_rules_print_four_created_rows_and_create_four_services(
    expose: Expose, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    finished = await expose(*FOUR_RULES)

    assert finished.code == 0, finished
    rows = finished.rows()
    assert sorted(rows) == [0, 1, 2, 3], finished.out
    assert [rows[i][1] for i in range(4)] == ["CREATED"] * 4, finished.out
    assert [rows[i][2] for i in range(4)] == ["web", "web-headless", "web-nodeport", "web-external"]
    assert rows[0][4] == "80:8088/TCP"
    assert rows[1][3:5] == ["None", "80:80/TCP"]
    assert rows[2][4] == "31234:80:8088/TCP"
    assert rows[3][3:5] == ["-", "-"]
    assert all(row[5] == "" for row in rows.values()), finished.out

    found = await services(api_client, namespace)
    assert set(found) == {"web", "web-headless", "web-nodeport", "web-external"}
    cluster_ip = found["web"]
    ipaddress.ip_address(rows[0][3])  # a real address, the one the cluster gave
    assert cluster_ip.spec.cluster_ip == rows[0][3]
    assert (cluster_ip.spec.type, cluster_ip.spec.selector) == ("ClusterIP", SELECTOR)
    assert [(p.port, p.target_port, p.protocol) for p in cluster_ip.spec.ports] == [
        (80, 8088, "TCP")
    ]
    headless = found["web-headless"]
    assert (headless.spec.type, headless.spec.cluster_ip) == ("ClusterIP", "None")
    assert headless.spec.selector == SELECTOR
    node_port = found["web-nodeport"]
    assert node_port.spec.type == "NodePort"
    assert node_port.spec.cluster_ip == rows[2][3]
    assert [(p.port, p.target_port, p.node_port) for p in node_port.spec.ports] == [
        (80, 8088, 31234)
    ]
    external = found["web-external"]
    assert external.spec.type == "ExternalName"
    assert external.spec.external_name == "www.example.com"
    assert not external.spec.ports
    uid = deployment["metadata"]["uid"]
    for service in found.values():
        owners = [(o.kind, o.name, o.uid) for o in service.metadata.owner_references]
        assert owners == [("Deployment", "web", uid)]


async def test_the_same_rules_again_are_all_unchanged(
    expose: Expose, deployment: dict[str, Any]
) -> None:
    first = await expose(*FOUR_RULES)
    assert first.code == 0, first

    again = await expose(*FOUR_RULES)

    assert again.code == 0, again
    rows = again.rows()
    assert [rows[i][1] for i in range(4)] == ["UNCHANGED"] * 4, again.out
    # Same Services, same cluster IPs: nothing was recreated.
    assert {i: row[2:5] for i, row in rows.items()} == {
        i: row[2:5] for i, row in first.rows().items()
    }


async def test_a_structured_spec_with_udp_and_a_named_target_port_as_json(
    expose: Expose, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    finished = await expose("--json", "--spec", json.dumps(RESOLVER))

    assert finished.code == 0, finished
    (line,) = finished.out.splitlines()
    result = json.loads(line)
    assert result["index"] == 0
    assert result["outcome"] == "OUTCOME_CREATED", result
    assert result["serviceName"] == "resolver"
    assert result["rule"] == "resolver=53:dns/udp"
    ((port,),) = [result["ports"]]
    assert (port["port"], port["targetPortName"], port["protocol"]) == (53, "dns", "PROTOCOL_UDP")

    service = (await services(api_client, namespace))["resolver"]
    assert service.spec.type == "ClusterIP"
    assert service.spec.cluster_ip == result["clusterIp"]
    assert service.spec.selector == SELECTOR
    assert [(p.port, p.target_port, p.protocol) for p in service.spec.ports] == [(53, "dns", "UDP")]


async def test_a_failing_rule_is_reported_the_others_created_and_exit_1(
    expose: Expose, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    finished = await expose("80:8088", "!99999:80:8088")

    assert finished.code == 1, finished
    rows = finished.rows()
    assert rows[0][1:3] == ["CREATED", "web"]
    assert rows[1][1] == "INVALID"
    assert "node port 99999 is outside 30000-32767" in rows[1][5], finished.out
    assert set(await services(api_client, namespace)) == {"web"}


async def test_a_dry_run_reports_created_and_creates_nothing(
    expose: Expose, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    finished = await expose("--dry-run", "80:8088")

    assert finished.code == 0, finished
    assert finished.rows()[0][1:3] == ["CREATED", "web"]
    assert await services(api_client, namespace) == {}


async def test_a_missing_deployment_exits_2_with_not_found(expose: Expose) -> None:
    finished = await expose("80:8088")

    assert finished.code == 2, finished
    assert finished.err.startswith("k8sailor-go: NOT_FOUND: "), finished.err
    assert 'Deployment "web" not found' in finished.err
    assert finished.out == ""


async def test_an_unreachable_server_exits_2_with_unavailable(
    k8sailor_go: Path, namespace: str
) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    finished = await run(
        k8sailor_go, "--server", nobody, "-n", namespace, "web", "--timeout", "10s", "80"
    )

    assert finished.code == 2, finished
    assert finished.err.startswith("k8sailor-go: UNAVAILABLE: "), finished.err


def readme_go_example(readme: str) -> str:
    """The first ```go block in the README's "## Go client" section."""
    section = re.search(r"^## Go client[ \t]*\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    assert section, 'README.md has no "## Go client" section'
    block = re.search(r"^```go[ \t]*\n(.*?)^```", section.group(1), re.M | re.S)
    assert block, 'the "## Go client" section of README.md has no ```go block'
    return block.group(1)


async def test_the_readme_go_example_compiles(tmp_path: Path) -> None:
    example = readme_go_example((REPO / "README.md").read_text(encoding="utf-8"))
    # A module of its own that requires ours through a replace, as a caller's would.
    (tmp_path / "main.go").write_text(example, encoding="utf-8")
    (tmp_path / "go.mod").write_text(
        "module example.com/k8sailor-readme\n\n"
        "go 1.26.0\n\n"
        "require github.com/k8sailor/k8sailor/client/go v0.0.0\n\n"
        f"replace github.com/k8sailor/k8sailor/client/go => {GO_MODULE}\n",
        encoding="utf-8",
    )
    shutil.copy(GO_MODULE / "go.sum", tmp_path / "go.sum")
    go = go_tool()

    for command in (("mod", "tidy"), ("build", "-o", os.devnull, "."), ("vet", ".")):
        finished = await run(go, *command, cwd=tmp_path, timeout=BUILD_TIMEOUT)
        assert finished.code == 0, (
            f"go {' '.join(command)} on the README's Go example failed:\n{finished.err}\n{example}"
        )
