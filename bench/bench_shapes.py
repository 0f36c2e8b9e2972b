"""The request shapes platform services send, against the raw client and client-go; with
--before DIR, the same shapes on another checkout's server too, side by side in one run.

Run from the repository root: .venv/bin/python -m bench.bench_shapes [--quick] [--before DIR]

`make bench-shapes` (a few minutes): the paths, the fairness figure and the Deployment
cache's figures of bench/shapes.py, written to shapes.{json,md,png} under --out
(bench/results by default; a --quick run writes to a temporary directory unless --out is
given).

--before DIR (another checkout of the repository, e.g. `git worktree add DIR main`): its
server and this checkout's each run as `python -m server` of their own directory, in a process
of their own, and the three request shapes (200-rule requests from one caller, 5-rule and
1-rule requests from 32 callers) take turns on both in every round. Quoted per shape: the
server process's CPU seconds per Service created (user + system, from /proc; medians over
rounds, 5 by default), and after / before. CPU per Service depends less than rates on what else
the machine runs, but on a busy shared machine one code measured twice still differs by 10-20%
in a round: quote the medians of many rounds. Written to shapes_before_after.* instead.
A benchmark, not a test: figures on a shared machine are noisy, ratios in one run less so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.measure import request_pipeline
from bench.processes import machine
from bench.report_shapes import before_after, shapes_report, shapes_summary, shapes_verdicts
from bench.runner import checkout, finished, on_cluster, results_dir, say, write_json
from bench.shapes import Shapes
from bench.workload import REPO


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_shapes", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer Services")
    parser.add_argument("--kubeconfig", type=Path, help="use this cluster instead of our own")
    parser.add_argument("--out", type=Path, help="where results go (default bench/results)")
    parser.add_argument("--services", type=int, help="Services per path and round (600)")
    parser.add_argument("--rounds", type=int, help="rounds (default 3, 5 with --before; --quick 2)")
    parser.add_argument(
        "--fairness-samples", type=int, help="one-rule requests per fairness case (30)"
    )
    parser.add_argument(
        "--before", metavar="DIR", help="another checkout whose server runs the shapes too"
    )
    parser.add_argument(
        "--rounds-only",
        action="store_true",
        help="only the rounds: no fairness or cache figures (a shorter --before run)",
    )
    parser.add_argument(
        "--report", type=Path, metavar="JSON", help="only write the report again from a JSON"
    )
    args = parser.parse_args(argv)
    if args.before is not None:
        args.before = checkout(parser, "--before", args.before)
    if args.out is None and not args.quick:
        args.out = REPO / "bench" / "results"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stem = "shapes" if args.before is None else "shapes_before_after"
    if args.report is not None:
        saved = json.loads(args.report.read_text())
        shapes_report(saved, args.out or args.report.parent, args.report.stem)
        return 0
    started = time.monotonic()
    out = results_dir(args.out, "k8sailor-bench-shapes-")
    description = machine()
    services = args.services or (120 if args.quick else 600)
    # Beside another checkout, more rounds: its figure is a median of per-round CPU.
    rounds = args.rounds or (2 if args.quick else 5 if args.before is not None else 3)
    samples = args.fairness_samples or (10 if args.quick else 30)
    parse = {"this_request": request_pipeline(3)}
    say(f"# shapes: {services} Services x {rounds} rounds")
    with on_cluster(args.kubeconfig, "k8sailor-bench-") as cluster:
        shapes = Shapes(
            cluster.kubeconfig, cluster.work_dir, services, rounds, samples,
            control_plane_pids=dict(cluster.control_plane_pids), before=args.before,
            extras=not args.rounds_only,
        )  # fmt: skip
        figures = asyncio.run(shapes.run())
    result: dict[str, Any] = {
        "machine": finished(description),
        "plan": {"services": services, "rounds": rounds, "fairness_samples": samples},
        "parse_build": parse,
        "shapes": figures,
        "seconds": time.monotonic() - started,
    }
    result["targets"] = shapes_verdicts(figures, shapes_summary(figures))
    if args.before is not None:
        result["before_after"] = before_after(figures)
    write_json(out, f"{stem}.json", result)
    shapes_report(result, out, stem)
    say(f"\n# results in {out} ({result['seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
