"""The request shapes platform services send, against the raw client and client-go.

`python -m bench.bench_services --shapes` (`make bench-shapes`): in one run, on one API server,
N ClusterIP Services per path and round, the paths taking turns within each round (the order
rotating every round):

  raw           kubernetes_asyncio, 32 calls in flight (bench.paths.run_raw)
  client_go     client-go, Go's own client, 32 in flight, QPS unlimited (bench/clientgo)
  k8s_200       k8sailor, requests of 200 rules from one caller
  k8s_5x32      k8sailor, requests of 5 rules from 32 callers
  k8s_1x32      k8sailor, requests of 1 rule from 32 callers
  k8s_1x32_off  the same, with --deployment-cache=off (a GET per request, as before the cache)
  k8s_1x32_asyncio  the same, with --event-loop asyncio (the standard loop, not uvloop)

k8sailor-server runs with --max-concurrency 32. Then the fairness figure (one-rule latency while
a 256-rule request runs, against alone: with the adaptive limit, the default, and with
--concurrency-limit=fixed, at 32 slots, and fixed at 4), the Deployment cache's figures (bytes
per Deployment, how long after a re-creation the cache still has the old uid), and parse +
build alone.

`python -m bench.bench_services --limits` runs only the limit's comparison, in a few minutes:
two servers side by side, --concurrency-limit adaptive and fixed, each round a throughput check
(raw, 200-rule requests and 1-rule requests from 32 callers on each server, taking turns) and
the fairness figure on each server (`Shapes.run_limits`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import statistics
import sys
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client as kube
from kubernetes_asyncio import config as kube_config

from bench.measure import CpuMeter, Run, percentile, to_run
from bench.paths import (
    Names,
    create_workload,
    delete_leftovers,
    delete_services,
    run_callers,
    run_clientgo,
    run_raw,
)
from bench.processes import ServerProcess, clientgo_binary, k8sailor_server, server_flags
from bench.workload import DEPLOYMENT, PORT, TARGET
from client import Client, Outcome
from server.kube import Kube
from server.kube.deployments import DeploymentCache
from server.manifests import Deployment
from tests import objects

RAW = "raw"
CLIENT_GO = "client_go"
BIG = "k8s_200"
FIVE = "k8s_5x32"
ONE = "k8s_1x32"
ONE_OFF = "k8s_1x32_off"
ONE_ASYNCIO = "k8s_1x32_asyncio"
LABELS = {
    RAW: "raw kubernetes_asyncio, 32 in flight",
    CLIENT_GO: "client-go (Go), 32 in flight, QPS unlimited",
    BIG: "k8sailor, 200-rule requests, one caller",
    FIVE: "k8sailor, 5-rule requests, 32 callers",
    ONE: "k8sailor, 1-rule requests, 32 callers",
    ONE_OFF: "k8sailor, 1-rule requests, 32 callers, --deployment-cache=off",
    ONE_ASYNCIO: "k8sailor, 1-rule requests, 32 callers, --event-loop asyncio",
}
# What each k8sailor path sends: (rules per request, callers).
REQUESTS = {BIG: (200, 1), FIVE: (5, 32), ONE: (1, 32), ONE_OFF: (1, 32), ONE_ASYNCIO: (1, 32)}
CONCURRENCY = 32
FAIRNESS_BIG = 256
FEW_SLOTS = 4
ADAPTIVE, FIXED = "adaptive", "fixed"
# The --limits run's throughput paths: (server, rules per request, callers).
LIMIT_PATHS = {
    f"k8s_200_{ADAPTIVE}": (ADAPTIVE, 200, 1),
    f"k8s_200_{FIXED}": (FIXED, 200, 1),
    f"k8s_1x32_{ADAPTIVE}": (ADAPTIVE, 1, 32),
    f"k8s_1x32_{FIXED}": (FIXED, 1, 32),
}
RUN_TIMEOUT_S = 300.0
# A path's way of creating Services with the given names.
Create = Callable[[str, list[str]], Awaitable[Any]]


@dataclass
class Shapes:
    kubeconfig: Path
    work_dir: Path
    services: int
    rounds: int
    fairness_samples: int
    control_plane_pids: dict[str, int] = field(default_factory=dict)
    namespace: str = field(default_factory=lambda: f"k8sailor-shapes-{uuid.uuid4().hex[:8]}")
    names: Names = field(default_factory=Names)
    runs: list[Run] = field(default_factory=list)
    uid: str = ""

    async def run(self) -> dict[str, Any]:
        binary = clientgo_binary()
        # Flags a checkout from before them does not know (a benchmark of an older commit).
        with_off = "--deployment-cache" in server_flags()
        with_loops = "--event-loop" in server_flags()
        raw_api = await kube_config.new_client_from_config(config_file=str(self.kubeconfig))
        admin_api = await kube_config.new_client_from_config(config_file=str(self.kubeconfig))
        async with raw_api, admin_api, contextlib.AsyncExitStack() as stack:
            raw_core, admin = kube.CoreV1Api(raw_api), kube.CoreV1Api(admin_api)
            self.uid = await create_workload(admin_api, self.namespace)
            server = await stack.enter_async_context(
                k8sailor_server(self.kubeconfig, CONCURRENCY, self.work_dir)
            )
            servers = {BIG: server, FIVE: server, ONE: server}
            if with_off:
                servers[ONE_OFF] = await stack.enter_async_context(
                    k8sailor_server(
                        self.kubeconfig,
                        CONCURRENCY,
                        self.work_dir,
                        flags=["--deployment-cache", "off"],
                    )
                )
            if with_loops:
                servers[ONE_ASYNCIO] = await stack.enter_async_context(
                    k8sailor_server(
                        self.kubeconfig,
                        CONCURRENCY,
                        self.work_dir,
                        flags=["--event-loop", "asyncio"],
                    )
                )
            paths = [RAW, CLIENT_GO, *servers]

            async def create(path: str, names: list[str]) -> Any:
                if path == RAW:
                    return await run_raw(raw_core, self.namespace, self.uid, names, CONCURRENCY)
                if path == CLIENT_GO:
                    return await run_clientgo(
                        binary, self.kubeconfig, self.namespace, self.uid, names, CONCURRENCY
                    )
                rules, callers = REQUESTS[path]
                return await run_callers(
                    servers[path].client, self.namespace, names, rules, callers
                )

            await self._warm_up(paths, create, admin)
            for round_ in range(self.rounds):
                await self._round(round_, paths, create, admin, servers)
            await delete_leftovers(admin, self.namespace)
            with_limits = "--concurrency-limit" in server_flags()
            fairness = [
                await self._fairness(server, CONCURRENCY, admin, ADAPTIVE if with_limits else "")
            ]
            fixed_flags = ["--concurrency-limit", FIXED] if with_limits else []
            if with_limits:
                fixed = await stack.enter_async_context(
                    k8sailor_server(self.kubeconfig, CONCURRENCY, self.work_dir, flags=fixed_flags)
                )
                fairness.append(await self._fairness(fixed, CONCURRENCY, admin, FIXED))
            # The review's case too: few slots, where first come, first served hurt most.
            few = await stack.enter_async_context(
                k8sailor_server(self.kubeconfig, FEW_SLOTS, self.work_dir, flags=fixed_flags)
            )
            fairness.append(
                await self._fairness(few, FEW_SLOTS, admin, FIXED if with_limits else "")
            )
            await delete_leftovers(admin, self.namespace)
            await stack.aclose()
            cache = await self._cache_figures(admin_api)
            await admin.delete_namespace(self.namespace)
        return {
            "paths": paths,
            "labels": {path: LABELS[path] for path in paths},
            "requests": {path: REQUESTS[path] for path in paths if path in REQUESTS},
            "runs": [asdict(run) for run in self.runs],
            "fairness": fairness,
            "cache": cache,
        }

    async def _warm_up(self, paths: Sequence[str], create: Create, admin: Any) -> None:
        """Open every path's connections before the clock starts."""
        for path in paths:
            names = self.names.fresh(2 * CONCURRENCY)
            await create(path, names)
            await delete_services(admin, self.namespace, names)

    async def _round(
        self,
        round_: int,
        paths: Sequence[str],
        create: Create,
        admin: Any,
        servers: Mapping[str, ServerProcess],
    ) -> None:
        """Every path creates its Services in turn, starting one further on each round; the
        CPU of the control plane and of the path's server (`servers`, if it has one) is
        counted."""
        turn = round_ % len(paths)
        for path in [*paths[turn:], *paths[:turn]]:
            names = self.names.fresh(self.services)
            watched = dict(self.control_plane_pids)
            if path in servers:
                watched["server"] = servers[path].process.pid
            meter = CpuMeter(watched)
            sample = await asyncio.wait_for(create(path, names), RUN_TIMEOUT_S)
            run = to_run(
                path, self.services, CONCURRENCY, round_, sample, cpu_seconds=meter.spent()
            )
            self.runs.append(run)
            await delete_services(admin, self.namespace, names)
        rates = ", ".join(f"{r.path} {r.rate:.0f}/s" for r in self.runs if r.round == round_)
        print(f"# round {round_ + 1}/{self.rounds}: {rates}", file=sys.stderr, flush=True)

    async def _one_rule(self, k8sailor: Client) -> tuple[float, str]:
        (name,) = self.names.fresh(1)
        sent = time.perf_counter()
        results = [
            r
            async for r in k8sailor.create_services(
                DEPLOYMENT, [f"{name}={PORT}:{TARGET}"], namespace=self.namespace
            )
        ]
        if [r.outcome for r in results] != [Outcome.CREATED]:
            raise RuntimeError(f"one-rule request failed: {results}")
        return time.perf_counter() - sent, name

    async def run_limits(self) -> dict[str, Any]:
        """The adaptive limit against the fixed one, side by side (see the module doc)."""
        admin_api = await kube_config.new_client_from_config(config_file=str(self.kubeconfig))
        raw_api = await kube_config.new_client_from_config(config_file=str(self.kubeconfig))
        async with raw_api, admin_api, contextlib.AsyncExitStack() as stack:
            raw_core, admin = kube.CoreV1Api(raw_api), kube.CoreV1Api(admin_api)
            self.uid = await create_workload(admin_api, self.namespace)
            servers = {
                limit: await stack.enter_async_context(
                    k8sailor_server(
                        self.kubeconfig,
                        CONCURRENCY,
                        self.work_dir,
                        flags=["--concurrency-limit", limit],
                    )
                )
                for limit in (ADAPTIVE, FIXED)
            }
            paths = [RAW, *LIMIT_PATHS]

            async def create(path: str, names: list[str]) -> Any:
                if path == RAW:
                    return await run_raw(raw_core, self.namespace, self.uid, names, CONCURRENCY)
                limit, rules, callers = LIMIT_PATHS[path]
                return await run_callers(
                    servers[limit].client, self.namespace, names, rules, callers
                )

            await self._warm_up(paths, create, admin)
            fairness: list[dict[str, Any]] = []
            server_of = {path: servers[limit] for path, (limit, _, _) in LIMIT_PATHS.items()}
            for round_ in range(self.rounds):
                await self._round(round_, paths, create, admin, server_of)
                order = [ADAPTIVE, FIXED] if round_ % 2 == 0 else [FIXED, ADAPTIVE]
                for limit in order:
                    figures = await self._fairness(servers[limit], CONCURRENCY, admin, limit)
                    figures["round"] = round_
                    fairness.append(figures)
            await delete_leftovers(admin, self.namespace)
            await stack.aclose()
            await admin.delete_namespace(self.namespace)
        return {
            "paths": paths,
            "runs": [asdict(run) for run in self.runs],
            "fairness": fairness,
            "summary": limits_summary(self.runs, fairness),
        }

    async def _fairness(
        self, server: ServerProcess, slots: int, admin: Any, limit: str = ""
    ) -> dict[str, Any]:
        """One-rule requests one after another, alone and while a 256-rule request runs."""
        alone: list[float] = []
        created: list[str] = []
        for _ in range(self.fairness_samples):
            seconds, name = await self._one_rule(server.client)
            alone.append(seconds)
            created.append(name)
        busy: list[float] = []
        big_requests = 0
        while len(busy) < self.fairness_samples:
            big_names = self.names.fresh(FAIRNESS_BIG)
            started = asyncio.Event()

            async def big(names: list[str] = big_names, started: asyncio.Event = started) -> None:
                rules = [f"{name}={PORT}:{TARGET}" for name in names]
                async for _ in server.client.create_services(
                    DEPLOYMENT, rules, namespace=self.namespace
                ):
                    started.set()

            task = asyncio.create_task(big())
            big_requests += 1
            await started.wait()
            while not task.done() and len(busy) < self.fairness_samples:
                seconds, name = await self._one_rule(server.client)
                if not task.done():  # only what ran wholly while the big request did
                    busy.append(seconds)
                created.append(name)
            await task
            created += big_names
            await delete_services(admin, self.namespace, big_names)
        await delete_services(admin, self.namespace, created)
        figures: dict[str, Any] = {
            "alone": _latencies(alone),
            "busy": _latencies(busy),
            "big_requests": big_requests,
            "big_rules": FAIRNESS_BIG,
            "server_concurrency": slots,
            "limit": limit,
        }
        figures["p50_ratio"] = figures["busy"]["p50_s"] / figures["alone"]["p50_s"]
        figures["p99_ratio"] = figures["busy"]["p99_s"] / figures["alone"]["p99_s"]
        alone_ms, busy_ms = figures["alone"]["p50_s"] * 1000, figures["busy"]["p50_s"] * 1000
        print(
            f"# fairness, {slots} slots {limit}: one-rule p50 {alone_ms:.1f} ms alone, "
            f"{busy_ms:.1f} ms beside a {FAIRNESS_BIG}-rule request "
            f"(p50 {figures['p50_ratio']:.2f}x, p99 {figures['p99_ratio']:.2f}x)",
            file=sys.stderr,
            flush=True,
        )
        return figures

    async def _cache_figures(self, api: Any) -> dict[str, Any]:
        """Bytes per cached Deployment, and how long after a Deployment is created again the
        cache still answers with the old uid (the window of the issue's correctness case)."""
        apps = kube.AppsV1Api(api)
        cache = DeploymentCache(Kube(api, max_in_flight=4), [self.namespace])
        await cache.start()
        windows: list[float] = []
        try:
            await cache.wait_synced()
            body = objects.deployment("again", {"app": "again"}, [("http", TARGET, "TCP")])
            for _ in range(20):
                created = await apps.create_namespaced_deployment(self.namespace, body)
                await _until(lambda uid=created.metadata.uid: _sees(cache, self.namespace, uid))
                await apps.delete_namespaced_deployment("again", self.namespace)
                again = await apps.create_namespaced_deployment(self.namespace, body)
                answered = time.perf_counter()
                await _until(lambda uid=again.metadata.uid: _sees(cache, self.namespace, uid))
                windows.append(time.perf_counter() - answered)
                await apps.delete_namespaced_deployment("again", self.namespace)
                await _until(lambda: cache.peek(self.namespace, "again") is None)
        finally:
            await cache.stop()
        return {
            "bytes_per_deployment": bytes_per_deployment(api),
            "stale_after_recreate": _latencies(windows),
            "stale_note": "from the API server's answer to the re-creating POST until the "
            "cache answers with the new uid (the window also includes the POST's own "
            "way back from the API server, which is not measurable from here)",
        }


def limits_summary(runs: Sequence[Run], fairness: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per path: median Services/s and the median of the rounds' ratios to raw; per limit:
    the fairness ratios of every round and their medians."""
    paths: dict[str, Any] = {}
    raw = {run.round: run.rate for run in runs if run.path == RAW}
    for path in dict.fromkeys(run.path for run in runs):
        mine = [run for run in runs if run.path == path]
        ratios = [run.rate / raw[run.round] for run in mine if raw.get(run.round)]
        paths[path] = {
            "rates": [run.rate for run in mine],
            "rate_median": statistics.median(run.rate for run in mine),
            "vs_raw_median": statistics.median(ratios) if ratios else None,
        }
    limits: dict[str, Any] = {}
    for limit in (ADAPTIVE, FIXED):
        cases = [figures for figures in fairness if figures["limit"] == limit]
        if not cases:
            continue
        limits[limit] = {
            "p50_ratios": [figures["p50_ratio"] for figures in cases],
            "p99_ratios": [figures["p99_ratio"] for figures in cases],
            "p50_ratio_median": statistics.median(figures["p50_ratio"] for figures in cases),
            "p99_ratio_median": statistics.median(figures["p99_ratio"] for figures in cases),
            "alone_p50_ms": [figures["alone"]["p50_s"] * 1000 for figures in cases],
            "busy_p50_ms": [figures["busy"]["p50_s"] * 1000 for figures in cases],
            "busy_p99_ms": [figures["busy"]["p99_s"] * 1000 for figures in cases],
        }
    return {"paths": paths, "fairness": limits}


def limits_table(summary: dict[str, Any]) -> str:
    """The --limits run as Markdown."""
    lines = [
        "| path | Services/s per round | median | vs raw (median of rounds) |",
        "|---|---|---:|---:|",
    ]
    for path, figures in summary["paths"].items():
        rates = ", ".join(f"{rate:.0f}" for rate in figures["rates"])
        ratio = figures["vs_raw_median"]
        shown = f"{ratio:.2f}x" if ratio is not None else ""
        lines.append(f"| {path} | {rates} | {figures['rate_median']:.0f} | {shown} |")
    lines += [
        "",
        "| limit | one-rule p50 ms alone | beside 256 rules p50 / p99 ms | p50 ratio | p99 ratio |",
        "|---|---|---|---|---|",
    ]
    for limit, figures in summary["fairness"].items():
        alone = ", ".join(f"{value:.0f}" for value in figures["alone_p50_ms"])
        busy = ", ".join(
            f"{p50:.0f} / {p99:.0f}"
            for p50, p99 in zip(figures["busy_p50_ms"], figures["busy_p99_ms"], strict=True)
        )
        p50s = ", ".join(f"{value:.2f}x" for value in figures["p50_ratios"])
        p99s = ", ".join(f"{value:.2f}x" for value in figures["p99_ratios"])
        lines.append(
            f"| {limit} | {alone} | {busy} | {p50s} (median {figures['p50_ratio_median']:.2f}x)"
            f" | {p99s} (median {figures['p99_ratio_median']:.2f}x) |"
        )
    return "\n".join(lines)


def _sees(cache: DeploymentCache, namespace: str, uid: str) -> bool:
    found = cache.peek(namespace, "again")
    return found is not None and found.uid == uid


async def _until(condition: Any) -> None:
    async with asyncio.timeout(30):
        while not condition():  # noqa: ASYNC110 - the cache has no event per Deployment
            await asyncio.sleep(0.0005)


def bytes_per_deployment(api: Any, count: int = 2000) -> dict[str, Any]:
    """What the cache keeps per Deployment (server.manifests.Deployment, in a dict keyed by
    namespace and name), measured with tracemalloc over `count` realistic Deployments."""
    ports = [("http", 8080, "TCP"), ("grpc", 9090, "TCP"), ("metrics", 9100, "TCP")]
    manifests = []
    for index in range(count):
        name = f"service-{index:05d}"
        body = api.sanitize_for_serialization(
            objects.deployment(name, {"app": name, "tier": "backend"}, ports)
        )
        body["metadata"] |= {"namespace": "team-a", "uid": str(uuid.uuid4())}
        manifests.append(body)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept: dict[tuple[str, str], Deployment] = {}
    for body in manifests:
        facts = Deployment.from_manifest(body)
        kept[(facts.namespace, facts.name)] = facts
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {
        "deployments": count,
        "bytes": (after - before) / count,
        "what": "3 named container ports, 2 matchLabels, as server.manifests.Deployment in a "
        "dict keyed by (namespace, name); tracemalloc, CPython",
    }


def _latencies(values: Sequence[float]) -> dict[str, Any]:
    return {
        "count": len(values),
        "p50_s": percentile(values, 50),
        "p99_s": percentile(values, 99),
        "max_s": max(values),
        "mean_s": statistics.fmean(values),
    }
