"""The API server dies in the middle of a request. When it comes back while the caller's
deadline still leaves room, the restart costs the request latency, not results; when it stays
away past the deadline, every rule still gets its one result, saying why."""

from __future__ import annotations

import asyncio
from collections import Counter

from kubernetes_asyncio import client

from client import Outcome
from server.kube import load_api_client
from tests.faults.conftest import FaultPlane
from tests.faults.observers import RecordingObserver
from tests.servers import k8sailor_over

CREATED_BEFORE_THE_KILL = 20
RULES = 150
MAX_IN_FLIGHT = 32


class KillAfterCreates(RecordingObserver):
    """Kills the API server as soon as it has answered a number of creates."""

    def __init__(self, plane: FaultPlane, creates: int) -> None:
        super().__init__()
        self.plane, self.creates = plane, creates
        self.killed = asyncio.Event()

    def call_finished(self, verb: str, resource: str, code: str, seconds: float) -> None:
        super().call_finished(verb, resource, code, seconds)
        if not self.killed.is_set() and self.codes()["201"] >= self.creates:
            self.killed.set()
            self.plane.kill_apiserver()


async def test_a_restart_in_the_middle_of_a_request_costs_latency_not_results(
    fault_plane: FaultPlane, fault_admin: client.ApiClient, fault_namespace: str
) -> None:
    rules = [f"r{index}=80:8088" for index in range(RULES)]
    observer = KillAfterCreates(fault_plane, CREATED_BEFORE_THE_KILL)

    async def restart() -> None:
        await observer.killed.wait()
        await fault_plane.restart_apiserver()  # as a real one: seconds until /readyz

    api = await load_api_client(str(fault_plane.plane.kubeconfig), None, pool_size=MAX_IN_FLIGHT)
    async with api, k8sailor_over(api, observer) as k8sailor:
        restarting = asyncio.create_task(restart())
        during = [
            r
            async for r in k8sailor.create_services(
                "web", rules, namespace=fault_namespace, timeout=60
            )
        ]
        await restarting
        after = [
            r
            async for r in k8sailor.create_services(
                "web", rules, namespace=fault_namespace, timeout=60
            )
        ]

    assert sorted(result.index for result in during) == list(range(RULES))
    outcomes = Counter(result.outcome for result in during)
    # A create in flight when the API server died may have been stored without an answer:
    # the next attempt finds it, k8sailor's own (UNCHANGED). At most one per call in flight.
    wrong = [r for r in during if r.outcome not in (Outcome.CREATED, Outcome.UNCHANGED)]
    assert wrong == []
    assert outcomes[Outcome.UNCHANGED] <= MAX_IN_FLIGHT
    # Connections refused were tried again until the API server was back.
    assert observer.retry_reasons()["Unreachable"] > 0
    listed = await client.CoreV1Api(fault_admin).list_namespaced_service(fault_namespace)
    assert len(listed.items) == RULES

    # The same k8sailor, with no restart of its own, finds them all.
    assert sorted(result.index for result in after) == list(range(RULES))
    assert {result.outcome for result in after} == {Outcome.UNCHANGED}
    print(f"\nduring the restart: {dict(outcomes)}; retried: {observer.retry_reasons()}")


async def test_every_rule_gets_one_result_and_the_next_request_succeeds(
    fault_plane: FaultPlane, fault_namespace: str
) -> None:
    rules = [f"s{index}=80:8088" for index in range(RULES)]
    observer = KillAfterCreates(fault_plane, CREATED_BEFORE_THE_KILL)
    api = await load_api_client(str(fault_plane.plane.kubeconfig), None, pool_size=MAX_IN_FLIGHT)
    async with api, k8sailor_over(api, observer) as k8sailor:
        # Down for all of this request's deadline. No RequestFailed: every result reaches
        # the caller before its deadline.
        during = [
            r
            async for r in k8sailor.create_services(
                "web", rules, namespace=fault_namespace, timeout=8
            )
        ]
        assert observer.killed.is_set()
        await fault_plane.restart_apiserver()
        after = [
            r
            async for r in k8sailor.create_services(
                "web", rules, namespace=fault_namespace, timeout=60
            )
        ]

    assert sorted(result.index for result in during) == list(range(RULES))
    outcomes = Counter(result.outcome for result in during)
    assert set(outcomes) == {Outcome.CREATED, Outcome.FAILED}
    assert outcomes[Outcome.CREATED] >= CREATED_BEFORE_THE_KILL
    for result in during:
        if result.outcome is Outcome.FAILED:
            # The last error, not "deadline exceeded": retrying stops while there is time
            # to say why.
            assert result.reason == "Unreachable", result
            assert result.error.startswith("API server unreachable"), result
    assert observer.retry_reasons()["Unreachable"] > 0

    assert sorted(result.index for result in after) == list(range(RULES))
    by_index = {result.index: result for result in after}
    for result in during:
        # What was created is found again; what failed is created now (or, if its create
        # reached the API server before it died, found).
        expected = (
            {Outcome.UNCHANGED}
            if result.outcome is Outcome.CREATED
            else {Outcome.CREATED, Outcome.UNCHANGED}
        )
        assert by_index[result.index].outcome in expected, by_index[result.index]
