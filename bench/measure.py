"""Figures from runs: per-Service latencies, rates, percentiles, CPU time per process, and
the parse + build throughput of the rule layer alone."""

from __future__ import annotations

import gc
import math
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.workload import DEPLOYMENT, MAX_RULES, PORT, REPO, SELECTOR, TARGET
from server.manifests import (
    ContainerPort,
    Deployment,
    build_services,
)
from server.rules import Protocol, parse_rule


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Sample:
    """What one path run measured: per-Service latencies and completion times since start."""

    start: float = field(default_factory=time.perf_counter)
    latencies: list[float] = field(default_factory=list)
    completions: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    end: float = 0.0
    requests: int = 1

    def ok(self, latency: float, now: float) -> None:
        self.latencies.append(latency)
        self.completions.append(now - self.start)

    def fail(self, message: str) -> None:
        self.errors.append(message)


@dataclass(frozen=True)
class Run:
    """One path, one round: the raw figures that go into latest.json."""

    path: str
    n: int
    c: int
    round: int
    requests: int
    seconds: float
    rate: float
    created: int
    errors: int
    first_s: float | None
    p50_s: float | None
    p99_s: float | None
    max_s: float | None
    completion_p50_s: float | None
    rss_before_mib: float | None
    rss_after_mib: float | None
    first_error: str = ""
    # CPU time per Service created: "client" is the benchmark process (and kubectl's
    # processes), "server" k8sailor-server, and the control plane's when it is ours.
    cpu_ms_per_service: dict[str, float] = field(default_factory=dict)


def to_run(
    path: str,
    n: int,
    c: int,
    round_: int,
    sample: Sample,
    rss: tuple[float | None, float | None] = (None, None),
    cpu_seconds: dict[str, float] | None = None,
) -> Run:
    seconds = sample.end - sample.start
    lat, done = sample.latencies, sample.completions
    return Run(
        path=path,
        n=n,
        c=c,
        round=round_,
        requests=sample.requests,
        seconds=seconds,
        rate=len(lat) / seconds if seconds > 0 else 0.0,
        created=len(lat),
        errors=len(sample.errors),
        first_s=min(done) if done else None,
        p50_s=percentile(lat, 50) if lat else None,
        p99_s=percentile(lat, 99) if lat else None,
        max_s=max(lat) if lat else None,
        completion_p50_s=percentile(done, 50) if done else None,
        rss_before_mib=rss[0],
        rss_after_mib=rss[1],
        first_error=sample.errors[0] if sample.errors else "",
        cpu_ms_per_service={
            who: 1000 * spent / len(lat) for who, spent in (cpu_seconds or {}).items() if lat
        },
    )


def median_of(runs: Sequence[Run], attribute: str) -> float | None:
    values = [getattr(run, attribute) for run in runs if getattr(run, attribute) is not None]
    return statistics.median(values) if values else None


def median_cpu(per_run: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per process, the median of the runs' CPU ms per Service."""
    who = sorted({key for cpu in per_run for key in cpu})
    return {key: statistics.median(cpu[key] for cpu in per_run if key in cpu) for key in who}


def medians(runs: Sequence[Run]) -> dict[str, Any]:
    """One path's runs (its rounds) in a report's row: medians, the rate's spread, errors."""
    return {
        "rounds": len(runs),
        "rate": median_of(runs, "rate"),
        "rate_min": min((r.rate for r in runs), default=None),
        "rate_max": max((r.rate for r in runs), default=None),
        "p50_s": median_of(runs, "p50_s"),
        "p99_s": median_of(runs, "p99_s"),
        "first_s": median_of(runs, "first_s"),
        "seconds": median_of(runs, "seconds"),
        "errors": sum(r.errors for r in runs),
        "first_error": next((r.first_error for r in runs if r.first_error), ""),
        "cpu_ms_per_service": median_cpu([r.cpu_ms_per_service for r in runs]),
    }


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds spent by this process and its children, and by other processes by pid."""

    def __init__(self, others: dict[str, int]) -> None:
        self._others = others
        self._start = self._read()

    def _read(self) -> dict[str, float]:
        times = os.times()
        own = {"client": time.process_time() + times.children_user + times.children_system}
        return own | {who: process_cpu_seconds(pid) for who, pid in self._others.items()}

    def spent(self) -> dict[str, float]:
        now = self._read()
        return {who: now[who] - self._start[who] for who in now}


def parse_and_build(rules: int, rounds: int) -> dict[str, Any]:
    """Parse + build throughput alone: bench/bench_rules.py's figures for its mix of rules,
    and the server's own pre-I/O steps for this benchmark's requests."""
    return {"bench_rules": _bench_rules(rules, rounds), "this_request": request_pipeline(rounds)}


def _bench_rules(rules: int, rounds: int) -> dict[str, Any]:
    """bench/bench_rules.py, in its own process: it is another benchmark's file, and its
    printed lines are the interface (each figure line: a name, then numbers, the first being
    rules/s)."""
    script = REPO / "bench" / "bench_rules.py"
    if not script.exists():
        return {"error": f"{script} not found"}
    command = [sys.executable, str(script), "--rules", str(rules), "--rounds", str(rounds)]
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return {"error": "bench_rules.py took more than 300 s"}
    rates = {
        match.group(1): float(match.group(2).replace(",", ""))
        for match in re.finditer(r"^\s+([a-z+]+)\s+([\d,]+(?:\.\d+)?)\s", done.stdout, re.M)
    }
    return {
        "command": " ".join(["python", "bench/bench_rules.py", *command[2:]]),
        "exit_code": done.returncode,
        "rules_per_second": rates,
        "output": done.stdout.strip() + ("\n" + done.stderr.strip() if done.returncode else ""),
    }


def request_pipeline(rounds: int, rules: int = MAX_RULES, repeats: int = 20) -> dict[str, Any]:
    """What the server does to a request of `rules` NAME=80:8080 rules before any I/O, as
    the exposer does it: parse every rule, render its canonical text, build the manifests."""
    texts = [f"s{i}-x={PORT}:{TARGET}" for i in range(rules)]
    deployment = Deployment(
        name=DEPLOYMENT,
        namespace="bench",
        uid=str(uuid.uuid4()),
        selector=dict(SELECTOR),
        container_ports=(ContainerPort("http", TARGET, Protocol.TCP),),
    )
    times = []
    for _ in range(rounds):
        gc.collect()
        started = time.process_time()
        for _ in range(repeats):
            parsed = [parse_rule(text, index) for index, text in enumerate(texts)]
            _ = [rule.canonical() for rule in parsed]
            build_services(parsed, deployment)
        times.append(time.process_time() - started)
    return {
        "what": f"parse_rule + canonical() + build_services, {rules}-rule requests of "
        f"NAME={PORT}:{TARGET}, CPU time, median of {rounds} rounds of {repeats} requests",
        "rules_per_second": rules * repeats / statistics.median(times),
    }


@dataclass(frozen=True)
class Plan:
    sizes: tuple[int, ...]
    concurrencies: tuple[int, ...]
    rounds: dict[int, int]
    kubectl_sizes: tuple[int, ...]
    memory_services: int
    parse_rules: int
    parse_rounds: int


def default_rounds(n: int, quick: bool) -> int:
    """More rounds where a round is short and noise weighs more; N=1000 rounds are most of a
    full run's time (about 5 min on a quiet 2-core machine, 12 when it is shared)."""
    if quick:
        return 2
    if n <= 10:
        return 7
    if n <= 100:
        return 5
    return 4
