"""The real API server throttles (429 with Retry-After): k8sailor waits as told and retries."""

from __future__ import annotations

from pathlib import Path

import pytest

from client import Outcome
from server.config import ServerConfig
from server.kube import load_api_client
from tests.faults.observers import RecordingObserver
from tests.servers import k8sailor_over


@pytest.mark.parametrize("limit", ["fixed", "adaptive"])
async def test_a_throttled_200_rule_request_creates_every_service(
    throttled_kubeconfig: Path, fault_namespace: str, limit: str
) -> None:
    observer = RecordingObserver()
    rules = [f"s{index}=80:8088" for index in range(200)]
    # With the fixed limit, four times the 2 mutating calls the API server admits: throttled
    # all the time, yet not so hard that a call is turned away for its whole retry window.
    # (At 32 in flight against 2 admitted, on a loaded 2-core machine, some calls were turned
    # away ten times in a row, when that was the most attempts a throttled call got.) The
    # adaptive limit halves the calls in flight after 429s, but grows again while answers are
    # fast: it is throttled too, less often (228 against 91 429s in one run).
    config = ServerConfig(listen="127.0.0.1:0", max_in_flight=8, concurrency_limit=limit)
    api = await load_api_client(str(throttled_kubeconfig), None, pool_size=8)
    async with api, k8sailor_over(api, observer, config) as k8sailor:
        results = [
            result
            async for result in k8sailor.create_services(
                "web", rules, namespace=fault_namespace, timeout=120
            )
        ]

    assert sorted(result.index for result in results) == list(range(200))
    failed = [(r.index, r.reason, r.error) for r in results if r.outcome is not Outcome.CREATED]
    assert failed == []
    # The API server did throttle, and every 429 was followed by another attempt.
    throttled = observer.codes()["429"]
    if limit == "fixed":
        assert throttled > 0
    assert observer.retry_reasons()["TooManyRequests"] == throttled
    assert observer.codes()["201"] == 200
    print(f"\n200 creates took {len(observer.finished)} attempts, {throttled} answered 429")
