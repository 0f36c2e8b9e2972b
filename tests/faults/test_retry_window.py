"""k8sailor keeps trying while the caller's deadline leaves room: an API server that goes away
for a few seconds, or turns away half of the creates, costs latency, not results.

Both at the size of a real request (250 rules, a 45 s deadline), through an HTTPS proxy in
front of the real API server (tests/faults/apiproxy.py). A rule ends CREATED, or UNCHANGED
exactly when the proxy lost the answer to a create the API server did: the next attempt then
finds the Service there, k8sailor's own, and says so.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from client import Outcome, Result
from server.app import ServerConfig
from server.kube import load_api_client
from tests.faults.apiproxy import FAULTS, Fault, RunningProxy, api_proxy
from tests.faults.conftest import FaultPlane
from tests.faults.identity import through
from tests.faults.observers import RecordingObserver
from tests.servers import k8sailor_over

RULES = 250
DEADLINE_S = 45.0
# A GET of the Deployment per request, and no watch through the proxy: every call it sees
# is the request's own.
CONFIG = ServerConfig(listen="127.0.0.1:0", deployment_cache="off")


@pytest.fixture
async def proxy(fault_plane: FaultPlane) -> AsyncIterator[RunningProxy]:
    async with api_proxy(fault_plane.plane.server, fault_plane.plane.data_dir / "pki") as running:
        yield running


async def expose(
    fault_plane: FaultPlane,
    proxy: RunningProxy,
    namespace: str,
    tmp_path: Path,
    observer: RecordingObserver,
) -> list[Result]:
    kubeconfig = through(fault_plane.plane.kubeconfig, tmp_path, proxy.address)
    api = await load_api_client(str(kubeconfig), None, pool_size=32)
    rules = [f"r{index}=80:8088" for index in range(RULES)]
    async with api, k8sailor_over(api, observer, CONFIG) as k8sailor:
        return [
            result
            async for result in k8sailor.create_services(
                "web", rules, namespace=namespace, timeout=DEADLINE_S
            )
        ]


def check(results: Sequence[Result], lost: set[str]) -> None:
    assert sorted(result.index for result in results) == list(range(RULES))
    outcomes = Counter(result.outcome for result in results)
    print(f"\n{dict(outcomes)}; answers lost: {len(lost)}")
    wrong = [
        (result.service_name, result.outcome.name, result.reason, result.error)
        for result in results
        if result.outcome
        is not (Outcome.UNCHANGED if result.service_name in lost else Outcome.CREATED)
    ]
    assert wrong == [], f"{len(wrong)} of {RULES} rules: {wrong[:5]}"


async def services(api: client.ApiClient, namespace: str) -> set[str]:
    listed = await client.CoreV1Api(api).list_namespaced_service(namespace)
    return {item.metadata.name for item in listed.items}


@pytest.mark.parametrize(
    "seconds",
    [3.0, 10.0],
    ids=["a 3 s outage", "a 10 s restart, the short end of a real cluster's"],
)
async def test_an_outage_early_in_a_request_costs_latency_not_results(
    fault_plane: FaultPlane,
    fault_admin: client.ApiClient,
    fault_namespace: str,
    proxy: RunningProxy,
    tmp_path: Path,
    seconds: float,
) -> None:
    observer = RecordingObserver()
    created_before = -1

    async def outage() -> None:
        nonlocal created_before
        await asyncio.sleep(0.5)
        created_before = observer.codes()["201"]
        await proxy.outage(seconds)

    went_away = asyncio.create_task(outage())
    results = await expose(fault_plane, proxy, fault_namespace, tmp_path, observer)
    await went_away

    # The outage came in the middle of the request, and calls met it.
    assert 0 <= created_before < RULES
    assert observer.retry_reasons()["Unreachable"] > 0
    check(results, proxy.proxy.lost)
    assert len(await services(fault_admin, fault_namespace)) == RULES
    print(f"created before the outage: {created_before}; retried: {observer.retry_reasons()}")


# About half of the creates are faulted, but never more than this many times in a row for one
# Service: the 45 s deadline has room for them all (pauses of at most a few seconds each), so
# every rule must get through. One rule in a hundred gets that many in a row, as happens by
# chance at this rate: six of them in a row used to give a rule up.
MOST_IN_A_ROW = 8
UNLUCKY: tuple[Fault, ...] = ("429", "503", "drop") * 3


async def test_half_of_the_creates_turned_away_or_dropped_costs_latency_not_results(
    fault_plane: FaultPlane,
    fault_admin: client.ApiClient,
    fault_namespace: str,
    proxy: RunningProxy,
    tmp_path: Path,
) -> None:
    chance = random.Random(21)
    in_a_row: Counter[str] = Counter()

    def fault(verb: str, name: str) -> Fault | None:
        if verb != "create":
            return None
        done = in_a_row[name]
        if done < MOST_IN_A_ROW and int(name.removeprefix("r")) % 100 == 0:
            fault: Fault | None = UNLUCKY[done]
        elif done < MOST_IN_A_ROW and chance.random() < 0.5:
            fault = chance.choice(FAULTS)
        else:
            fault = None
        in_a_row[name] = 0 if fault is None else done + 1
        return fault

    proxy.proxy.fault = fault
    observer = RecordingObserver()
    results = await expose(fault_plane, proxy, fault_namespace, tmp_path, observer)

    faults = proxy.proxy.faults
    assert set(faults) == set(FAULTS)  # each kind of fault was met, and got over
    check(results, proxy.proxy.lost)
    assert len(await services(fault_admin, fault_namespace)) == RULES
    creates = sum(1 for verb, _, _ in observer.finished if verb == "create")
    print(f"{creates} create attempts; faults: {dict(faults)}")
