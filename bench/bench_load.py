"""Load: many callers at once against one k8sailor server, on the local control plane.

Run: .venv/bin/python -m bench.bench_load [--callers 64] [--seconds 60] [--kubeconfig PATH]
     (or `make bench-load`)

64 callers (by default), each on its own channel, send CreateServices requests of 1-50 rules
(uniformly drawn, ClusterIP and headless) back to back for a minute, against a k8sailor-server
process of its own. What is checked and reported:

- every rule of every request that was answered got exactly one result: rules lost (no
  result) and duplicated (two) are counted, and should both be 0;
- outcomes and errors by kind (outcome/reason for rules, gRPC status for whole requests);
- request latency p50/p99 (start to last result) and time to the first result;
- the server's RSS before the load, at its peak (sampled each second) and after.

A benchmark, not a test: nothing here asserts timings. Figures go to bench/results/load.json
and bench/results/load.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client as kube
from kubernetes_asyncio import config as kube_config

from bench.paths import create_workload
from bench.runner import on_cluster
from client import Outcome, RequestFailed, connect
from tests.controlplane import rss_mib
from tests.servers import server_process

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Tally:
    """What all callers saw, merged as they go (one event loop: no locks needed)."""

    requests: int = 0
    rules_sent: int = 0
    results: int = 0
    lost: int = 0
    duplicated: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    first_result: list[float] = field(default_factory=list)


async def _caller(
    number: int, target: str, namespace: str, until: float, rng: random.Random, tally: Tally
) -> None:
    async with connect(target) as k8sailor:
        sent = 0
        while time.monotonic() < until:
            size = rng.randint(1, 50)
            rules = [
                f"l{number}-{sent}-{i}={'#' if rng.random() < 0.2 else ''}{80 + i % 5}:8080"
                for i in range(size)
            ]
            sent += 1
            seen: Counter[int] = Counter()
            started = time.perf_counter()
            first: float | None = None
            try:
                async for result in k8sailor.create_services(
                    "web", rules, namespace=namespace, timeout=60
                ):
                    first = first if first is not None else time.perf_counter() - started
                    seen[result.index] += 1
                    tally.outcomes[result.outcome.name] += 1
                    if result.outcome is not Outcome.CREATED:
                        tally.errors[f"rule {result.outcome.name}/{result.reason}"] += 1
            except RequestFailed as error:
                tally.errors[f"request {error.code.name}"] += 1
                tally.requests += 1
                continue
            tally.requests += 1
            tally.rules_sent += size
            tally.results += sum(seen.values())
            tally.lost += sum(1 for index in range(size) if seen[index] == 0)
            tally.duplicated += sum(count - 1 for count in seen.values() if count > 1)
            tally.duplicated += sum(count for index, count in seen.items() if index >= size)
            tally.latencies.append(time.perf_counter() - started)
            if first is not None:
                tally.first_result.append(first)


async def _prepare(kubeconfig: Path) -> str:
    namespace = f"k8sailor-bench-load-{uuid.uuid4().hex[:6]}"
    api = await kube_config.new_client_from_config(config_file=str(kubeconfig))
    async with api:
        await create_workload(api, namespace)
    return namespace


async def _clean_up(kubeconfig: Path, namespace: str) -> None:
    api = await kube_config.new_client_from_config(config_file=str(kubeconfig))
    async with api:
        await kube.CoreV1Api(api).delete_namespace(namespace)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _bench(args: argparse.Namespace, kubeconfig: Path, work: Path) -> dict[str, Any]:
    namespace = await _prepare(kubeconfig)
    tally = Tally()
    rss: list[float] = []
    try:
        async with server_process(kubeconfig, work, ["--log-level", "WARNING"]) as server:
            target, pid = server.target, server.process.pid
            rss_before = rss_mib(pid)
            until = time.monotonic() + args.seconds

            async def sample() -> None:
                while True:
                    rss.append(rss_mib(pid))
                    await asyncio.sleep(1)

            sampler = asyncio.create_task(sample())
            started = time.perf_counter()
            rng = random.Random(args.seed)
            await asyncio.gather(
                *(
                    _caller(n, target, namespace, until, random.Random(rng.random()), tally)
                    for n in range(args.callers)
                )
            )
            elapsed = time.perf_counter() - started
            sampler.cancel()
            rss_after = rss_mib(pid)
            server_alive = server.process.returncode is None
    finally:
        await _clean_up(kubeconfig, namespace)
    return {
        "callers": args.callers,
        "seconds": round(elapsed, 1),
        "requests": tally.requests,
        "rules_sent": tally.rules_sent,
        "results": tally.results,
        "lost": tally.lost,
        "duplicated": tally.duplicated,
        "rules_per_second": round(tally.results / elapsed, 1),
        "outcomes": dict(tally.outcomes),
        "errors": dict(tally.errors),
        "latency_ms": {
            "p50": round(statistics.median(tally.latencies) * 1e3, 1) if tally.latencies else None,
            "p99": round(_percentile(tally.latencies, 0.99) * 1e3, 1),
        },
        "first_result_ms": {
            "p50": round(_percentile(tally.first_result, 0.5) * 1e3, 1),
            "p99": round(_percentile(tally.first_result, 0.99) * 1e3, 1),
        },
        "server_rss_mib": {
            "before": round(rss_before, 1),
            "peak": round(max(rss, default=rss_before), 1),
            "after": round(rss_after, 1),
        },
        "server_alive_after": server_alive,
        "machine": f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {', '.join(f'{v:.1f}' for v in os.getloadavg())}",
    }


def _markdown(figures: dict[str, Any]) -> str:
    f = figures
    errors = "\n".join(f"| {kind} | {count:,} |" for kind, count in sorted(f["errors"].items()))
    return f"""# Load: {f["callers"]} callers, requests of 1-50 rules, {f["seconds"]} s

`make bench-load` ({f["machine"]}).

| figure | value |
| --- | --- |
| requests answered | {f["requests"]:,} |
| rules sent / results received | {f["rules_sent"]:,} / {f["results"]:,} |
| rules lost / duplicated | {f["lost"]} / {f["duplicated"]} |
| results per second | {f["rules_per_second"]:,} |
| request latency p50 / p99 | {f["latency_ms"]["p50"]} ms / {f["latency_ms"]["p99"]} ms |
| first result p50 / p99 | {f["first_result_ms"]["p50"]} ms / {f["first_result_ms"]["p99"]} ms |
| server RSS before / peak / after | {f["server_rss_mib"]["before"]} / {f["server_rss_mib"]["peak"]} / {f["server_rss_mib"]["after"]} MiB |
| server still up after | {f["server_alive_after"]} |

Outcomes: {", ".join(f"{k} {v:,}" for k, v in sorted(f["outcomes"].items()))}.

| error kind | count |
| --- | ---: |
{errors or "| (none) | 0 |"}
"""  # noqa: E501 - a table row per line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--kubeconfig", help="an existing cluster (default: a local one)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    with on_cluster(args.kubeconfig, "k8sailor-bench-load-") as cluster:
        figures = asyncio.run(_bench(args, cluster.kubeconfig, cluster.work_dir))
    print(json.dumps(figures, indent=2))
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "load.json").write_text(json.dumps(figures, indent=2) + "\n")
        (RESULTS / "load.md").write_text(_markdown(figures))
    return 0 if figures["lost"] == 0 and figures["duplicated"] == 0 else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
