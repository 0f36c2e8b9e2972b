"""The adaptive concurrency limit against the fixed one, side by side, in a few minutes.

Run from the repository root: .venv/bin/python -m bench.bench_limits (`make bench-limits`)

Two servers run side by side, --concurrency-limit adaptive and fixed (--max-concurrency 32),
on one API server (our own local control plane unless --kubeconfig is given). Each round: a
throughput check (raw, 200-rule requests and 1-rule requests from 32 callers on each server,
taking turns, as in bench/shapes.py) and the fairness figure on each server (one-rule latency
beside a 256-rule request, against alone). Writes limits.json under --out (a temporary
directory unless given) and prints the tables. A benchmark, not a test: figures on a shared
machine are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.measure import Run
from bench.paths import delete_leftovers, run_callers, run_raw, workload
from bench.processes import k8sailor_server, machine
from bench.runner import finished, on_cluster, results_dir, say, write_json
from bench.shapes import ADAPTIVE, CONCURRENCY, FIXED, RAW, Shapes
from bench.tables import table

# The throughput paths: (server, rules per request, callers).
LIMIT_PATHS = {
    f"k8s_200_{ADAPTIVE}": (ADAPTIVE, 200, 1),
    f"k8s_200_{FIXED}": (FIXED, 200, 1),
    f"k8s_1x32_{ADAPTIVE}": (ADAPTIVE, 1, 32),
    f"k8s_1x32_{FIXED}": (FIXED, 1, 32),
}


async def measure(shapes: Shapes) -> dict[str, Any]:
    """The adaptive limit against the fixed one, side by side (see the module doc)."""
    async with (
        workload(shapes.kubeconfig, shapes.namespace) as apis,
        contextlib.AsyncExitStack() as stack,
    ):
        raw_core, admin, shapes.uid = apis.raw, apis.admin, apis.uid
        servers = {
            limit: await stack.enter_async_context(
                k8sailor_server(
                    shapes.kubeconfig,
                    CONCURRENCY,
                    shapes.work_dir,
                    flags=["--concurrency-limit", limit],
                )
            )
            for limit in (ADAPTIVE, FIXED)
        }
        paths = [RAW, *LIMIT_PATHS]

        async def create(path: str, names: list[str]) -> Any:
            if path == RAW:
                return await run_raw(raw_core, shapes.namespace, shapes.uid, names, CONCURRENCY)
            limit, rules, callers = LIMIT_PATHS[path]
            return await run_callers(servers[limit].client, shapes.namespace, names, rules, callers)

        await shapes.warm_up(paths, create, admin)
        fairness: list[dict[str, Any]] = []
        server_of = {path: servers[limit] for path, (limit, _, _) in LIMIT_PATHS.items()}
        for round_ in range(shapes.rounds):
            await shapes.round(round_, paths, create, admin, server_of)
            order = [ADAPTIVE, FIXED] if round_ % 2 == 0 else [FIXED, ADAPTIVE]
            for limit in order:
                figures = await shapes.fairness(servers[limit], CONCURRENCY, admin, limit)
                figures["round"] = round_
                fairness.append(figures)
        await delete_leftovers(admin, shapes.namespace)
        await stack.aclose()
    return {
        "paths": paths,
        "runs": [asdict(run) for run in shapes.runs],
        "fairness": fairness,
        "summary": limits_summary(shapes.runs, fairness),
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
    """The run as Markdown: throughput per path, then fairness per limit."""
    throughput = table(
        ("path", "Services/s per round", "median", "vs raw (median of rounds)"),
        (
            (
                path,
                ", ".join(f"{rate:.0f}" for rate in figures["rates"]),
                f"{figures['rate_median']:.0f}",
                "" if figures["vs_raw_median"] is None else f"{figures['vs_raw_median']:.2f}x",
            )
            for path, figures in summary["paths"].items()
        ),
        "llrr",
    )
    rows = []
    for limit, figures in summary["fairness"].items():
        busy = zip(figures["busy_p50_ms"], figures["busy_p99_ms"], strict=True)
        p50s = ", ".join(f"{value:.2f}x" for value in figures["p50_ratios"])
        p99s = ", ".join(f"{value:.2f}x" for value in figures["p99_ratios"])
        rows.append(
            (
                limit,
                ", ".join(f"{value:.0f}" for value in figures["alone_p50_ms"]),
                ", ".join(f"{p50:.0f} / {p99:.0f}" for p50, p99 in busy),
                f"{p50s} (median {figures['p50_ratio_median']:.2f}x)",
                f"{p99s} (median {figures['p99_ratio_median']:.2f}x)",
            )
        )
    fairness = table(
        (
            "limit",
            "one-rule p50 ms alone",
            "beside 256 rules p50 / p99 ms",
            "p50 ratio",
            "p99 ratio",
        ),
        rows,
    )
    return f"{throughput}\n\n{fairness}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_limits", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--kubeconfig", type=Path, help="use this cluster instead of our own")
    parser.add_argument("--out", type=Path, help="where limits.json goes (default: a temp dir)")
    parser.add_argument("--services", type=int, default=200, help="Services per path and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--fairness-samples", type=int, default=20, help="one-rule requests per fairness case"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    out = results_dir(args.out, "k8sailor-bench-limits-")
    description = machine()
    say(f"# limits: {args.services} Services x {args.rounds} rounds")
    with on_cluster(args.kubeconfig, "k8sailor-bench-") as cluster:
        shapes = Shapes(
            cluster.kubeconfig, cluster.work_dir, args.services, args.rounds,
            args.fairness_samples, control_plane_pids=dict(cluster.control_plane_pids),
        )  # fmt: skip
        figures = asyncio.run(measure(shapes))
    description = finished(description)
    result: dict[str, Any] = {
        "machine": description,
        "plan": {
            "services": args.services,
            "rounds": args.rounds,
            "fairness_samples": args.fairness_samples,
        },
        "limits": figures,
        "seconds": time.monotonic() - started,
    }
    write_json(out, "limits.json", result)
    load = description["load_average_at_start"], description["load_average_at_end"]
    print(limits_table(figures["summary"]))
    print(
        f"\nload average (1, 5, 15 min) at start {load[0]}, at end {load[1]}; "
        f"{result['seconds'] / 60:.1f} min; results in {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
