"""Throughput of the pure layer: rules parsed, manifests built, per second on one core.

Run: .venv/bin/python bench/bench_rules.py [--rules N] [--rounds R]

A realistic mix of distinct rule texts, no two alike. Nothing caches results by rule text;
the only memo is per model object (a parsed rule remembers its canonical text, which the parser
notes for free when the input already was canonical), and every round parses afresh, so every
call does the full work a request would. Prints the median of several rounds for parse alone,
build alone, and parse + build, against the 50,000 rules/s target for parse + build.

Rates are given by CPU time of the benchmarking thread (what the code costs on one core) and by
wall-clock time; on a busy machine the two differ, and the load average is printed with them.
A benchmark, not a test: timings on shared machines are noisy.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Runnable as a plain script from the repository root or elsewhere.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.manifests import ContainerPort, Deployment, build_service
from server.rules import Protocol, ServiceRule, parse_rule

TARGET = 50_000

DEPLOYMENT = Deployment(
    name="web",
    namespace="default",
    uid="0d2c7c2e-4c4f-4b8a-9a51-3f1c1f5e9b10",
    selector={"app.kubernetes.io/name": "web", "app.kubernetes.io/instance": "web-1"},
    container_ports=(
        ContainerPort("http", 8080, Protocol.TCP),
        ContainerPort("metrics", 9090, Protocol.TCP),
        ContainerPort("grpc", 9000, Protocol.TCP),
        ContainerPort("dns", 53, Protocol.UDP),
    ),
)


def _port(rng: random.Random) -> int:
    return rng.randint(1, 65535)


def _node(rng: random.Random) -> int:
    return rng.randint(30000, 32767)


# (weight, maker): what callers send, most often the plain forms of the earlier tool.
_SHAPES: list[tuple[int, Callable[[random.Random, int], str]]] = [
    (28, lambda r, i: f"{_port(r)}:{_port(r)}"),
    (10, lambda r, i: f"{_port(r)}"),
    (8, lambda r, i: f"#{_port(r)}:{_port(r)}"),
    (8, lambda r, i: f"!{_port(r)}:{_port(r)}"),
    (6, lambda r, i: f"!{_node(r)}:{_port(r)}:{_port(r)}"),
    (4, lambda r, i: f"^{_port(r)}:{_port(r)}"),
    (3, lambda r, i: f"^{_node(r)}:{_port(r)}:{_port(r)}"),
    (5, lambda r, i: f"@db-{i}.example.com"),
    (8, lambda r, i: f"{_port(r)}:{_port(r)},{_port(r)}:{_port(r)}"),
    (5, lambda r, i: f"svc-{i}=!{_port(r)}:{_port(r)}"),
    (4, lambda r, i: f"{_port(r)}:{_port(r)}/udp"),
    (4, lambda r, i: f"{_port(r)}:{_port(r)}/grpc"),
    (4, lambda r, i: f"{_port(r)}:{r.choice(['http', 'metrics', 'grpc'])}"),
    (3, lambda r, i: f" {_port(r)} : {_port(r)} "),
]


def make_rules(count: int, seed: int = 3) -> list[str]:
    """``count`` distinct rule texts in the mix above (all valid)."""
    rng = random.Random(seed)
    weights = [w for w, _ in _SHAPES]
    makers = [m for _, m in _SHAPES]
    texts: list[str] = []
    seen: set[str] = set()
    while len(texts) < count:
        maker = rng.choices(makers, weights)[0]
        text = maker(rng, len(texts))
        if text in seen:
            continue
        try:
            parse_rule(text, 0)  # the generator can pick one port twice in a rule: skip those
        except Exception:
            continue
        seen.add(text)
        texts.append(text)
    return texts


def _rates(
    run: Callable[[], None], count: int, rounds: int, setup: Callable[[], None] | None = None
) -> tuple[float, float]:
    """Median rules/s over the rounds, by CPU time of this thread and by wall-clock time.

    CPU time is what the code costs on one core; wall time also counts the moments another
    process had the core, which on a shared machine can be most of the difference."""
    cpu_times = []
    wall_times = []
    for _ in range(rounds):
        if setup is not None:
            setup()
        gc.collect()
        wall = time.perf_counter()
        cpu = time.thread_time()
        run()
        cpu_times.append(time.thread_time() - cpu)
        wall_times.append(time.perf_counter() - wall)
    return count / statistics.median(cpu_times), count / statistics.median(wall_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=50_000, help="distinct rules per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds; the median is reported")
    args = parser.parse_args()

    texts = make_rules(args.rules)
    models: list[ServiceRule] = []
    deployment = DEPLOYMENT

    def fresh_models() -> None:
        # Models remember their canonical text once rendered; build from fresh ones each
        # round, as a request does, so that later rounds do not get it for free.
        models[:] = [parse_rule(t, i) for i, t in enumerate(texts)]

    def parse_only() -> None:
        for i, text in enumerate(texts):
            parse_rule(text, i)

    def build_only() -> None:
        for i, model in enumerate(models):
            build_service(model, deployment, i)

    def parse_and_build() -> None:
        for i, text in enumerate(texts):
            build_service(parse_rule(text, i), deployment, i)

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"{args.rules} distinct rules, median of {args.rounds} rounds, "
        f"Python {platform.python_version()} on {platform.machine()} "
        f"({os.cpu_count()} CPUs, load average {load})"
    )
    results = {
        "parse": _rates(parse_only, len(texts), args.rounds),
        "build": _rates(build_only, len(texts), args.rounds, fresh_models),
        "parse+build": _rates(parse_and_build, len(texts), args.rounds),
    }
    print(f"  {'':<12} {'rules/s (CPU)':>14} {'µs/rule':>8} {'rules/s (wall)':>15}")
    for name, (cpu_rate, wall_rate) in results.items():
        print(f"  {name:<12} {cpu_rate:>14,.0f} {1e6 / cpu_rate:>8.2f} {wall_rate:>15,.0f}")
    cpu_rate, wall_rate = results["parse+build"]
    verdict = "meets" if cpu_rate >= TARGET else "MISSES"
    print(f"parse+build {verdict} the target of {TARGET:,} rules/s (CPU time)")


if __name__ == "__main__":
    main()
