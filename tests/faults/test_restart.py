"""The API server dies in the middle of a request, and comes back."""

from __future__ import annotations

from collections import Counter

from client import Outcome
from server.kube import load_api_client
from tests.faults.conftest import FaultPlane
from tests.faults.observers import RecordingObserver
from tests.servers import k8sailor_over

CREATED_BEFORE_THE_KILL = 20


class KillAfterCreates(RecordingObserver):
    """Kills the API server as soon as it has answered a number of creates."""

    def __init__(self, plane: FaultPlane, creates: int) -> None:
        super().__init__()
        self.plane, self.creates, self.killed = plane, creates, False

    def call_finished(self, verb: str, resource: str, code: str, seconds: float) -> None:
        super().call_finished(verb, resource, code, seconds)
        if not self.killed and self.codes()["201"] >= self.creates:
            self.killed = True
            self.plane.kill_apiserver()


async def test_every_rule_gets_one_result_and_the_next_request_succeeds(
    fault_plane: FaultPlane, fault_namespace: str
) -> None:
    rules = [f"r{index}=80:8088" for index in range(150)]
    observer = KillAfterCreates(fault_plane, CREATED_BEFORE_THE_KILL)
    api = await load_api_client(str(fault_plane.plane.kubeconfig), None, pool_size=32)
    async with api, k8sailor_over(api, observer) as k8sailor:
        # No RequestFailed: every result reaches the caller before its deadline.
        during = [
            r
            async for r in k8sailor.create_services(
                "web", rules, namespace=fault_namespace, timeout=60
            )
        ]
        assert observer.killed
        await fault_plane.restart_apiserver()
        after = [
            r
            async for r in k8sailor.create_services(
                "web", rules, namespace=fault_namespace, timeout=60
            )
        ]

    assert sorted(result.index for result in during) == list(range(150))
    outcomes = Counter(result.outcome for result in during)
    assert set(outcomes) == {Outcome.CREATED, Outcome.FAILED}
    assert outcomes[Outcome.CREATED] >= CREATED_BEFORE_THE_KILL
    for result in during:
        if result.outcome is Outcome.FAILED:
            assert result.reason == "Unreachable", result
            assert result.error.startswith("API server unreachable"), result
    # Connections refused were tried again before the rule was given up.
    assert observer.retry_reasons()["Unreachable"] > 0

    assert sorted(result.index for result in after) == list(range(150))
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
