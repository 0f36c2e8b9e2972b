"""A create or delete whose answer is lost after the API server did it: k8sailor sends it
again, and reports what its first attempt did (a create finds its Service already there,
reads and compares it: UNCHANGED; a delete finds nothing left: DELETED, not NOT_FOUND).

The real API server cannot be made to lose an answer, so an HTTPS proxy sits in front of it
(tests/faults/apiproxy.py): it passes every request on (as the admin), and for the creates and
deletes it is told to, drops the connection instead of answering."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from client import Outcome
from server.kube import load_api_client
from tests.faults.apiproxy import Fault, RunningProxy, api_proxy
from tests.faults.conftest import FaultPlane
from tests.faults.identity import through
from tests.faults.observers import RecordingObserver
from tests.servers import k8sailor_over


@pytest.fixture
async def proxy(fault_plane: FaultPlane) -> AsyncIterator[RunningProxy]:
    async with api_proxy(fault_plane.plane.server, fault_plane.plane.data_dir / "pki") as running:
        yield running


def losing(wanted: str, count: int) -> Callable[[str, str], Fault | None]:
    """Loses the answers to the first `count` calls of verb `wanted`."""
    left = count

    def fault(verb: str, name: str) -> Fault | None:
        nonlocal left
        if verb != wanted or left == 0:
            return None
        left -= 1
        return "lose"

    return fault


async def test_a_create_sent_again_after_its_answer_was_lost_is_unchanged(
    fault_plane: FaultPlane,
    fault_namespace: str,
    proxy: RunningProxy,
    tmp_path: Path,
) -> None:
    proxy.proxy.fault = losing("create", 5)
    kubeconfig = through(fault_plane.plane.kubeconfig, tmp_path, proxy.address)
    observer = RecordingObserver()
    api = await load_api_client(str(kubeconfig), None, pool_size=8)
    rules = [f"lost{index}=80:8088" for index in range(5)]
    async with api, k8sailor_over(api, observer) as k8sailor:
        results = [
            r
            async for r in k8sailor.create_services(
                "web", rules, namespace=fault_namespace, timeout=60
            )
        ]

    assert proxy.proxy.faults["lose"] == 5
    assert len(proxy.proxy.lost) == 5
    assert sorted(result.index for result in results) == list(range(5))
    # Each Service was made by the first attempt; the second found it, as k8sailor makes it.
    assert {result.outcome for result in results} == {Outcome.UNCHANGED}
    assert all(result.cluster_ip for result in results)
    assert observer.retry_reasons() == {"Unreachable": 5}
    assert observer.codes()["409"] == 5


async def test_a_delete_sent_again_after_its_answer_was_lost_is_deleted(
    fault_plane: FaultPlane,
    fault_namespace: str,
    proxy: RunningProxy,
    tmp_path: Path,
) -> None:
    kubeconfig = through(fault_plane.plane.kubeconfig, tmp_path, proxy.address)
    observer = RecordingObserver()
    api = await load_api_client(str(kubeconfig), None, pool_size=8)
    async with api, k8sailor_over(api, observer) as k8sailor:
        created = [
            r async for r in k8sailor.create_services("web", ["gone=80"], namespace=fault_namespace)
        ]
        assert [result.outcome for result in created] == [Outcome.CREATED]
        proxy.proxy.fault = losing("delete", 1)
        deleted = [
            d
            async for d in k8sailor.delete_services(
                "web", ["gone"], namespace=fault_namespace, timeout=60
            )
        ]
    assert proxy.proxy.faults["lose"] == 1
    # The first attempt deleted it; the second found nothing: this call's own doing.
    assert [(d.service_name, d.outcome) for d in deleted] == [("gone", Outcome.DELETED)]
    assert [code for verb, _, code in observer.finished if verb == "delete"] == ["error", "404"]
    assert observer.retry_reasons() == {"Unreachable": 1}


async def test_an_apply_whose_create_lost_its_answer_reports_the_service_created(
    fault_plane: FaultPlane,
    fault_namespace: str,
    proxy: RunningProxy,
    tmp_path: Path,
) -> None:
    proxy.proxy.fault = losing("create", 1)
    kubeconfig = through(fault_plane.plane.kubeconfig, tmp_path, proxy.address)
    observer = RecordingObserver()
    api = await load_api_client(str(kubeconfig), None, pool_size=8)
    async with api, k8sailor_over(api, observer) as k8sailor:
        applied = [
            r
            async for r in k8sailor.apply_services(
                "web", ["lost=80:8088"], namespace=fault_namespace, timeout=60
            )
        ]

    assert proxy.proxy.faults["lose"] == 1
    assert len(proxy.proxy.lost) == 1
    # The first attempt made it; the second found it there, read it and saw it is ours: the
    # caller is told of the Service this call created, not of an unchanged one.
    assert [(r.service_name, r.outcome) for r in applied] == [("lost", Outcome.CREATED)]
    assert [code for verb, _, code in observer.finished if verb == "create"] == ["error", "409"]
