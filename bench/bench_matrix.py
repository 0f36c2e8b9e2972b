"""Services per second: k8sailor against its ceiling (the API server) and against kubectl.

Run from the repository root: .venv/bin/python -m bench.bench_matrix [--quick]

`make bench` (about 10 minutes): the N x c matrix below. The request shapes platform services
send are bench/bench_shapes.py (`make bench-shapes`), the concurrency limits
bench/bench_limits.py (`make bench-limits`).

In one run, on one API server (our own local control plane unless --kubeconfig is given), with
fresh Service names every round and the Services of a round deleted before the next:

  raw            kubernetes_asyncio's CoreV1Api.create_namespaced_service, c workers sharing one
                 ApiClient, bodies built as V1Service models and answers deserialized into
                 them (the client's defaults, as a user writes it)
  k8sailor_1req  one CreateServices request of N rules to a k8sailor-server process started
                 with --max-concurrency c, counted until the last streamed result
  k8sailor_creq  the same N rules spread over min(c, N) concurrent requests of ~N/c rules
                 each, to the same server (identical to k8sailor_1req when min(c, N) = 1,
                 so not run then)
  kubectl        `kubectl create service clusterip NAME --tcp=80:8080`, one process per
                 Service, one after the other, as a person would (small N only)

Every rule is a ClusterIP `NAME=80:8080`; the raw path creates exactly the Service k8sailor
builds for it (selector, port name, owner reference, label, annotation). The paths take turns
within each (N, c) block, rotating their order every round, and medians over rounds are
quoted. Also measured: parse + build throughput (bench/bench_rules.py), the server's RSS
while it creates 10,000 Services in requests of 1,000 rules, and that one 1,000-rule request.

Writes latest.json, services_per_second.png and README.md under --out (bench/results by
default; a --quick run writes to a temporary directory unless --out is given), and prints the
Markdown table at the end. A benchmark, not a test: figures on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.measure import (
    CpuMeter,
    Plan,
    Run,
    Sample,
    default_rounds,
    median_of,
    parse_and_build,
    to_run,
)
from bench.paths import (
    Names,
    delete_leftovers,
    delete_services,
    run_k8sailor,
    run_kubectl,
    run_raw,
    workload,
)
from bench.processes import ServerProcess, k8sailor_server, machine
from bench.report_matrix import report, summarise, verdicts
from bench.runner import finished, on_cluster, results_dir, say, write_json
from bench.workload import (
    BIN,
    CLEANUP_CONCURRENCY,
    KUBECTL,
    MAX_RULES,
    MEMORY_REQUEST,
    ONE,
    RAW,
    REPO,
    RUN_TIMEOUT_S,
    SPREAD,
)


@dataclass
class Bench:
    plan: Plan
    kubeconfig: Path
    work_dir: Path
    namespace: str = field(default_factory=lambda: f"k8sailor-bench-{uuid.uuid4().hex[:8]}")
    runs: list[Run] = field(default_factory=list)
    blocks: list[dict[str, Any]] = field(default_factory=list)
    names: Names = field(default_factory=Names)
    uid: str = ""
    control_plane_pids: dict[str, int] = field(default_factory=dict)
    server_source: Path | None = None

    def kubectl_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "KUBECACHEDIR": str(self.work_dir / "kubectl-cache"),
        }

    async def run(self) -> dict[str, Any]:
        async with (
            workload(self.kubeconfig, self.namespace) as apis,
            contextlib.AsyncExitStack() as stack,
        ):
            raw_core, admin, self.uid = apis.raw, apis.admin, apis.uid
            servers: dict[int, ServerProcess] = {}
            for c in self.plan.concurrencies:
                servers[c] = await stack.enter_async_context(
                    k8sailor_server(self.kubeconfig, c, self.work_dir, self.server_source)
                )
            for n in self.plan.sizes:
                for c in self.plan.concurrencies:
                    await self._block(n, c, raw_core, admin, servers[c])
            await stack.aclose()  # the matrix servers are done: stop them before the memory run
            return await self._memory(admin)

    async def _warm(
        self, path: str, c: int, raw_core: Any, admin: Any, server: ServerProcess
    ) -> None:
        """Open the connections a path will use at concurrency c (TLS handshakes, HTTP/2
        settings) before its block is timed; aiohttp closes idle ones after 15 s."""
        names = self.names.fresh(1 if path == KUBECTL else max(2 * c, 4))
        await self._create(path, names, c, 1, raw_core, server)
        await delete_services(admin, self.namespace, names)

    async def _create(
        self,
        path: str,
        names: Sequence[str],
        c: int,
        requests: int,
        raw_core: Any,
        server: ServerProcess,
    ) -> Sample:
        """Create `names` by `path`: c raw workers, `requests` k8sailor requests, or kubectl."""
        if path == RAW:
            return await run_raw(raw_core, self.namespace, self.uid, names, c)
        if path == KUBECTL:
            return await run_kubectl(self._kubectl(), self.kubectl_env(), self.namespace, names)
        return await run_k8sailor(server.client, self.namespace, names, requests)

    def _kubectl(self) -> str:
        found = BIN / "kubectl"
        return str(found) if found.exists() else shutil.which("kubectl") or "kubectl"

    async def _one(
        self, path: str, n: int, c: int, round_: int, raw_core: Any, server: ServerProcess
    ) -> tuple[Run, list[str]]:
        names = self.names.fresh(n)
        k8sailor = path in (ONE, SPREAD)
        rss_before = server.rss() if k8sailor else None
        watched = dict(self.control_plane_pids)
        if k8sailor:
            watched["server"] = server.process.pid
        meter = CpuMeter(watched)
        requests = min(c, n) if path == SPREAD else 1
        sample = await self._create(path, names, c, requests, raw_core, server)
        cpu = meter.spent()
        rss_after = server.rss() if k8sailor else None
        c_run = 1 if path == KUBECTL else c
        return to_run(path, n, c_run, round_, sample, (rss_before, rss_after), cpu), names

    async def _block(
        self, n: int, c: int, raw_core: Any, admin: Any, server: ServerProcess
    ) -> None:
        paths = [RAW, ONE]
        if min(c, n) > 1:
            paths.append(SPREAD)
        if c == self.plan.concurrencies[0] and n in self.plan.kubectl_sizes:
            paths.append(KUBECTL)
        started = time.perf_counter()
        for path in paths:
            await self._warm(path, c, raw_core, admin, server)
        rss_before = server.rss()
        rounds = self.plan.rounds[n]
        mine: list[Run] = []
        for round_ in range(rounds):
            turn = round_ % len(paths)
            for path in paths[turn:] + paths[:turn]:
                run, names = await asyncio.wait_for(
                    self._one(path, n, c, round_, raw_core, server), RUN_TIMEOUT_S
                )
                mine.append(run)
                await delete_services(admin, self.namespace, names)
        self.runs += mine
        leftovers = await delete_leftovers(admin, self.namespace)
        rss_after = server.rss()
        self.blocks.append(
            {
                "n": n,
                "c": c,
                "paths": paths,
                "rounds": rounds,
                "server_rss_before_mib": rss_before,
                "server_rss_after_mib": rss_after,
                "leftovers_deleted": leftovers,
                "seconds": time.perf_counter() - started,
            }
        )
        rates = ", ".join(
            f"{path} {median_of([r for r in mine if r.path == path], 'rate') or 0:.0f}/s"
            for path in paths
        )
        print(f"# N={n:<5} c={c:<3} {rounds} rounds: {rates}", file=sys.stderr, flush=True)

    async def _memory(self, admin: Any) -> dict[str, Any]:
        """Server RSS while one server (its default --max-concurrency) creates
        plan.memory_services Services in requests of MEMORY_REQUEST rules, deleting after each."""
        requests = max(1, self.plan.memory_services // MEMORY_REQUEST)
        async with k8sailor_server(
            self.kubeconfig, None, self.work_dir, self.server_source
        ) as server:
            rss_start = server.rss()
            names = self.names.fresh(MEMORY_REQUEST)
            warm = await run_k8sailor(server.client, self.namespace, names, 1)
            await delete_services(admin, self.namespace, names)
            rss_warm = server.rss()
            rss_after: list[float] = []
            runs: list[Run] = []
            for index in range(requests):
                names = self.names.fresh(MEMORY_REQUEST)
                meter = CpuMeter(self.control_plane_pids | {"server": server.process.pid})
                sample = await run_k8sailor(server.client, self.namespace, names, 1)
                cpu = meter.spent()
                await delete_services(admin, self.namespace, names)
                rss_after.append(server.rss())
                runs.append(to_run(ONE, MEMORY_REQUEST, 0, index, sample, cpu_seconds=cpu))
            total = sum(run.created for run in runs)
            print(
                f"# memory: {total} Services, server RSS {rss_start:.1f} -> {rss_warm:.1f} "
                f"(warm) -> {rss_after[-1]:.1f} MiB",
                file=sys.stderr,
                flush=True,
            )
            return {
                "server_concurrency": "server default",
                "requests": requests,
                "rules_per_request": MEMORY_REQUEST,
                "services_created": total,
                "errors": sum(run.errors for run in runs) + len(warm.errors),
                "rss_start_mib": rss_start,
                "rss_after_warm_up_mib": rss_warm,
                "rss_after_each_request_mib": rss_after,
                "growth_after_warm_up_mib": rss_after[-1] - rss_warm,
                "growth_from_start_mib": rss_after[-1] - rss_start,
                "one_request": [asdict(run) for run in runs],
            }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_matrix", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer sizes and rounds")
    parser.add_argument("--kubeconfig", type=Path, help="use this cluster instead of our own")
    parser.add_argument("--out", type=Path, help="where results go (default bench/results)")
    parser.add_argument("--sizes", type=int, nargs="+", help="N values (default 1 10 100 1000)")
    parser.add_argument("--concurrency", type=int, nargs="+", help="c values (default 1 8 32 64)")
    parser.add_argument("--rounds", type=int, help="rounds per (N, c) (default: 7, 7, 5, 4 by N)")
    parser.add_argument("--kubectl-sizes", type=int, nargs="*", help="N values for kubectl")
    parser.add_argument("--memory-services", type=int, help="Services for the memory run")
    parser.add_argument(
        "--report",
        type=Path,
        metavar="JSON",
        help="only write the targets, plot, README.md and table again from a latest.json",
    )
    parser.add_argument(
        "--server-from",
        type=Path,
        metavar="DIR",
        help="run `python -m server` from DIR (a patched copy of the repository) instead of "
        "this checkout's k8sailor-server",
    )
    args = parser.parse_args(argv)
    if args.out is None and not args.quick and args.report is None:
        args.out = REPO / "bench" / "results"
    return args


def make_plan(args: argparse.Namespace) -> Plan:
    quick = bool(args.quick)
    sizes = tuple(args.sizes or ((1, 10, 100) if quick else (1, 10, 100, 1000)))
    if max(sizes) > MAX_RULES:
        raise SystemExit(f"N is at most {MAX_RULES} (the server's --max-rules here)")
    concurrencies = tuple(args.concurrency or ((1, 8, 32) if quick else (1, 8, 32, 64)))
    kubectl_sizes = tuple(args.kubectl_sizes if args.kubectl_sizes is not None else (1, 10))
    return Plan(
        sizes=sizes,
        concurrencies=concurrencies,
        rounds={n: args.rounds or default_rounds(n, quick) for n in sizes},
        kubectl_sizes=tuple(n for n in kubectl_sizes if n in sizes),
        memory_services=args.memory_services or (2_000 if quick else 10_000),
        parse_rules=5_000 if quick else 20_000,
        parse_rounds=3 if quick else 5,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report is not None:
        saved = json.loads(args.report.read_text())
        saved["targets"] = verdicts(saved)
        args.report.write_text(json.dumps(saved, indent=1) + "\n")
        report(saved, args.out or args.report.parent)
        return 0
    plan = make_plan(args)
    started = time.monotonic()
    out = results_dir(args.out, "k8sailor-bench-quick-")
    description = machine()
    say(f"# parse + build ({plan.parse_rules} rules x {plan.parse_rounds})")
    parse = parse_and_build(plan.parse_rules, plan.parse_rounds)
    with on_cluster(args.kubeconfig, "k8sailor-bench-") as cluster:
        say(f"# cluster ready; N {plan.sizes}, c {plan.concurrencies}, rounds {plan.rounds}")
        bench = Bench(plan, cluster.kubeconfig, cluster.work_dir, server_source=args.server_from)
        bench.control_plane_pids = dict(cluster.control_plane_pids)
        memory = asyncio.run(bench.run())
    description = finished(description)
    result: dict[str, Any] = {
        "machine": description,
        "cluster": cluster.about,
        "plan": asdict(plan),
        "notes": {
            RAW: "one shared kubernetes_asyncio ApiClient (connection pool 100), c workers, "
            "V1Service model bodies, answers deserialized into V1Service (the defaults); "
            "latency is each call's own time",
            ONE: "one CreateServices request of N rules through client.connect; latency is "
            "from sending the request to the rule's streamed result",
            SPREAD: "min(c, N) concurrent requests of ~N/c contiguous rules on one channel; "
            "not run when min(c, N) = 1 (it would be the 1-request run)",
            KUBECTL: "kubectl create service clusterip, sequential, one process per Service; "
            "its rate does not depend on N, so larger N are compared with its largest N",
            "cleanup": f"deleted by name, {CLEANUP_CONCURRENCY} at a time, with a separate "
            "ApiClient, between runs, not timed",
            "warm-up": "each path creates (and deletes) a few Services at the block's c before "
            "the block is timed, so connections are open",
        },
        "server_from": str(args.server_from) if args.server_from else "this checkout",
        "parse_build": parse,
        "runs": [asdict(run) for run in bench.runs],
        "blocks": bench.blocks,
        "memory": memory,
        "seconds": time.monotonic() - started,
    }
    result["summary"] = summarise(plan, bench.runs, bench.blocks)
    result["targets"] = verdicts(result)
    write_json(out, "latest.json", result)
    report(result, out)
    say(f"\n# results in {out} ({result['seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
