"""The request shapes platform services send, against the raw client and client-go.

`Shapes.run` (bench/bench_shapes.py, `make bench-shapes`): in one run, on one API server,
N ClusterIP Services per path and round, the paths taking turns within each round (the order
rotating every round):

  raw           kubernetes_asyncio, 32 calls in flight (bench.paths.run_raw)
  client_go     client-go, Go's own client, 32 in flight, QPS unlimited (bench/clientgo)
  k8s_200       k8sailor, requests of 200 rules from one caller
  k8s_5x32      k8sailor, requests of 5 rules from 32 callers
  k8s_1x32      k8sailor, requests of 1 rule from 32 callers
  k8s_1x32_off  the same, with --deployment-cache=off (a GET per request, as before the cache)
  k8s_1x32_asyncio  the same, with --event-loop asyncio (the standard loop, not uvloop)

With `before` (another checkout), the last two are left out and the three shapes run on that
checkout's server too (k8s_200_before, ...), in the same rounds: its CPU per Service beside
this checkout's.

k8sailor-server runs with --max-concurrency 32. Then (unless `extras` is off) the fairness
figure (one-rule latency while a 256-rule request runs, against alone: with the adaptive
limit, the default, and with --concurrency-limit=fixed, at 32 slots, and fixed at 4) and the
Deployment cache's figures (bytes per Deployment, how long after a re-creation the cache
still has the old uid). The warm-up, rounds and fairness figure serve bench/bench_limits.py
too.
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

from bench.measure import CpuMeter, Run, percentile, to_run
from bench.paths import (
    Names,
    delete_leftovers,
    delete_services,
    run_callers,
    run_clientgo,
    run_raw,
    workload,
)
from bench.processes import ServerProcess, clientgo_binary, k8sailor_server, server_flags
from bench.workload import DEPLOYMENT, PORT, REPO, TARGET
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
# The request shapes proper, which --before measures on both checkouts.
SHAPES = (BIG, FIVE, ONE)
BEFORE = "_before"
RUN_TIMEOUT_S = 300.0


def before_path(path: str) -> str:
    """The name of a shape's path on the --before checkout's server."""
    return path + BEFORE


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
    before: Path | None = None  # another checkout, whose server runs the shapes too
    extras: bool = True  # the fairness and cache figures after the rounds

    async def run(self) -> dict[str, Any]:
        binary = clientgo_binary()
        # Flags a checkout from before them does not know (a benchmark of an older commit).
        with_off = "--deployment-cache" in server_flags()
        with_loops = "--event-loop" in server_flags()
        async with (
            workload(self.kubeconfig, self.namespace) as apis,
            contextlib.AsyncExitStack() as stack,
        ):
            raw_core, admin, self.uid = apis.raw, apis.admin, apis.uid
            # Beside another checkout, both run as `python -m server` of their directory, so
            # that they differ in their code only.
            after = REPO if self.before is not None else None
            server = await stack.enter_async_context(self._server(after))
            servers = {BIG: server, FIVE: server, ONE: server}
            if self.before is not None:
                old = await stack.enter_async_context(self._server(self.before))
                servers |= {before_path(path): old for path in SHAPES}
            else:  # the variants of the shapes, this checkout's only
                if with_off:
                    flags = ["--deployment-cache", "off"]
                    servers[ONE_OFF] = await stack.enter_async_context(self._server(None, flags))
                if with_loops:
                    flags = ["--event-loop", "asyncio"]
                    servers[ONE_ASYNCIO] = await stack.enter_async_context(
                        self._server(None, flags)
                    )
            paths = [RAW, CLIENT_GO, *servers]

            async def create(path: str, names: list[str]) -> Any:
                if path == RAW:
                    return await run_raw(raw_core, self.namespace, self.uid, names, CONCURRENCY)
                if path == CLIENT_GO:
                    return await run_clientgo(
                        binary, self.kubeconfig, self.namespace, self.uid, names, CONCURRENCY
                    )
                rules, callers = REQUESTS[path.removesuffix(BEFORE)]
                return await run_callers(
                    servers[path].client, self.namespace, names, rules, callers
                )

            await self.warm_up(paths, create, admin)
            for round_ in range(self.rounds):
                await self.round(round_, paths, create, admin, servers)
            await delete_leftovers(admin, self.namespace)
            fairness: list[dict[str, Any]] = []
            cache: dict[str, Any] = {}
            if self.extras:
                fairness = await self._fairness_cases(stack, server, admin)
            await stack.aclose()
            if self.extras:
                cache = await self._cache_figures(apis.admin_api)
        labels = LABELS | {before_path(path): f"{LABELS[path]} (before)" for path in SHAPES}
        return {
            "paths": paths,
            "labels": {path: labels[path] for path in paths},
            "requests": {
                path: REQUESTS[path.removesuffix(BEFORE)]
                for path in paths
                if path.removesuffix(BEFORE) in REQUESTS
            },
            "before": str(self.before) if self.before is not None else None,
            "runs": [asdict(run) for run in self.runs],
            "fairness": fairness,
            "cache": cache,
        }

    def _server(
        self, source: Path | None, flags: Sequence[str] = ()
    ) -> contextlib.AbstractAsyncContextManager[ServerProcess]:
        """k8sailor-server at the shapes' --max-concurrency: this checkout's, or source's."""
        return k8sailor_server(self.kubeconfig, CONCURRENCY, self.work_dir, source, flags)

    async def _fairness_cases(
        self, stack: contextlib.AsyncExitStack, server: ServerProcess, admin: Any
    ) -> list[dict[str, Any]]:
        """The fairness figure with the adaptive limit (the default), with the fixed one, and
        fixed at FEW_SLOTS slots (the review's case: where first come, first served hurt most)."""
        await delete_leftovers(admin, self.namespace)
        with_limits = "--concurrency-limit" in server_flags()
        fairness = [
            await self.fairness(server, CONCURRENCY, admin, ADAPTIVE if with_limits else "")
        ]
        fixed_flags = ["--concurrency-limit", FIXED] if with_limits else []
        if with_limits:
            fixed = await stack.enter_async_context(self._server(None, fixed_flags))
            fairness.append(await self.fairness(fixed, CONCURRENCY, admin, FIXED))
        few = await stack.enter_async_context(
            k8sailor_server(self.kubeconfig, FEW_SLOTS, self.work_dir, flags=fixed_flags)
        )
        fairness.append(await self.fairness(few, FEW_SLOTS, admin, FIXED if with_limits else ""))
        await delete_leftovers(admin, self.namespace)
        return fairness

    async def warm_up(self, paths: Sequence[str], create: Create, admin: Any) -> None:
        """Open every path's connections before the clock starts."""
        for path in paths:
            names = self.names.fresh(2 * CONCURRENCY)
            await create(path, names)
            await delete_services(admin, self.namespace, names)

    async def round(
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

    async def fairness(
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
        windows: list[float] = []
        async with Kube(api, max_in_flight=4) as adapter:  # it closes its own aiohttp session
            cache = DeploymentCache(adapter, [self.namespace])
            await cache.start()
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
