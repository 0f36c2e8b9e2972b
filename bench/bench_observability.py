"""What metrics and tracing cost: one-rule requests with them on, as a ratio to both off.

Run from the repository root: .venv/bin/python -m bench.bench_observability [--quick]

In one run, on one API server (our own local control plane unless --kubeconfig is given),
four k8sailor servers, each in a process of its own, all started before the first request:

  off      no metrics, no tracing: no interceptor, no call observer, the API's no-op spans
  metrics  /metrics served, the Prometheus interceptor, the Kube call observer, rule counts
  tracing  an SDK tracer provider exporting to an in-memory exporter through a
           BatchSpanProcessor (as production would export over OTLP), emptied every round
  both     metrics and tracing
  both_sampled  metrics, and tracing with 1 request in 10 sampled
           (OTEL_TRACES_SAMPLER=parentbased_traceidratio, OTEL_TRACES_SAMPLER_ARG=0.1)

Every request is one dry-run ClusterIP rule to the same Deployment: a Deployment read and a
Service create, but nothing stored, so the API server's state is the same for every server
and every round, and the request is as short as a request gets, which makes the overhead's
share as large as it gets. The modes take turns within each round (rotating the order every
round), c clients at once sending a round's requests between them. Quoted: the median over
rounds of requests per second; "ratio to off", the median over rounds of the mode's requests
per second divided by "off"'s in the same round (a paired figure: many short rounds, so a
burst of load from elsewhere on the machine falls on few of them and on every mode alike);
and the server process's CPU milliseconds per request (over all rounds). A benchmark, not a
test: figures on a shared machine are noisy.

With --compare-with DIR (another checkout of k8sailor, e.g. a git worktree of main), the same
modes also run from DIR's code, as "mode@base", in the same rounds: a change's before and after
side by side, on the same machine at the same moments.

Writes observability.json and observability.md under --out (bench/results by default).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kubernetes_asyncio import client as kube
from kubernetes_asyncio import config as kube_config
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from bench.measure import process_cpu_seconds
from bench.runner import on_cluster
from client import Client, Outcome, connect
from server.app import ServerConfig, serving
from server.kube import load_api_client
from tests import objects
from tests.controlplane import free_port

REPO = Path(__file__).resolve().parent.parent
MODES = ("off", "metrics", "tracing", "both", "both_sampled")
NAMESPACE = "k8sailor-bench-observability"
SELECTOR = {"app": "bench"}


# --------------------------------------------------------------------------- a server process


async def serve(mode: str, listen: str, kubeconfig: str) -> None:
    """The server of one mode, in this process, until SIGTERM.

    On SIGUSR1 (a round ended) it prints how many spans it exported since the last one, and
    forgets them, so memory stays flat and the parent knows tracing really was on.
    """
    metrics = mode in ("metrics", "both", "both_sampled")
    provider, exporter = None, InMemorySpanExporter()
    if mode in ("tracing", "both", "both_sampled"):
        sampler = ParentBased(TraceIdRatioBased(0.1 if mode == "both_sampled" else 1.0))
        provider = TracerProvider(sampler=sampler)
        provider.add_span_processor(BatchSpanProcessor(exporter))

    def round_ended() -> None:
        if provider is not None:
            provider.force_flush()
        print(len(exporter.get_finished_spans()), flush=True)
        exporter.clear()

    config = ServerConfig(listen=listen, metrics_listen="127.0.0.1:0" if metrics else "")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, round_ended)
    api = await load_api_client(kubeconfig, None, pool_size=32)
    async with api, serving(api, config, tracer_provider=provider):
        await stop.wait()
    if provider is not None:
        provider.shutdown()


# --------------------------------------------------------------------------- the bench


@dataclass
class Server:
    mode: str  # as reported: "both", or "both@base" for the --compare-with checkout's
    process: asyncio.subprocess.Process
    client: Client


BASE_SUFFIX = "@base"


async def _wait_serving(target: str, process: asyncio.subprocess.Process) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(600):
            if process.returncode is not None:
                break
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)
    raise RuntimeError(f"the {target} server never became SERVING")


@contextlib.asynccontextmanager
async def server(mode: str, kubeconfig: Path, base: Path | None = None) -> AsyncIterator[Server]:
    """A server of mode, from this checkout's code or, with base, from that checkout's."""
    target = f"127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "bench.bench_observability", "--serve", mode, target]
    env = dict(os.environ)
    if base is not None:
        # Its packages before the ones this environment has installed (editable, ours).
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(base), env.get("PYTHONPATH")]))
    process = await asyncio.create_subprocess_exec(
        *command,
        "--kubeconfig",
        str(kubeconfig),
        cwd=base or REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        await _wait_serving(target, process)
        async with connect(target) as connected:
            label = mode + (BASE_SUFFIX if base is not None else "")
            yield Server(label, process, connected)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 15)
        if process.returncode is None:
            process.kill()
            await process.wait()


async def one_round(target: Server, clients: int, requests: int) -> dict[str, float]:
    """requests one-rule requests, sent by clients at once (requests // clients each)."""

    async def worker() -> None:
        for _ in range(requests // clients):
            results = [
                result
                async for result in target.client.create_services(
                    "web", ["80:8080"], namespace=NAMESPACE, dry_run=True
                )
            ]
            if [result.outcome for result in results] != [Outcome.CREATED]:
                raise RuntimeError(f"{target.mode}: unexpected results {results}")

    cpu = process_cpu_seconds(target.process.pid)
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    seconds = time.perf_counter() - started
    cpu = process_cpu_seconds(target.process.pid) - cpu
    target.process.send_signal(signal.SIGUSR1)
    assert target.process.stdout is not None
    spans = int(await asyncio.wait_for(target.process.stdout.readline(), 30))
    total = clients * (requests // clients)
    return {
        "requests_per_second": total / seconds,
        "server_cpu_ms_per_request": 1000 * cpu / total,
        "spans_per_request": spans / total,
    }


async def prepare(kubeconfig: Path) -> None:
    api = await kube_config.new_client_from_config(config_file=str(kubeconfig))
    async with api:
        core, apps = kube.CoreV1Api(api), kube.AppsV1Api(api)
        with contextlib.suppress(kube.ApiException):
            await core.create_namespace(
                kube.V1Namespace(metadata=kube.V1ObjectMeta(name=NAMESPACE))
            )
        with contextlib.suppress(kube.ApiException):
            await apps.create_namespaced_deployment(
                NAMESPACE, objects.deployment("web", SELECTOR, [("http", 8080, "TCP")])
            )


async def bench(
    kubeconfig: Path,
    rounds: int,
    clients: Sequence[int],
    requests: int,
    base: Path | None = None,
) -> Any:
    await prepare(kubeconfig)
    async with contextlib.AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(server(mode, kubeconfig)) for mode in MODES]
        if base is not None:
            servers += [
                await stack.enter_async_context(server(mode, kubeconfig, base)) for mode in MODES
            ]
        for target in servers:  # warm up: connections, imports, the API server's caches
            await one_round(target, 2, 20)
        figures: dict[int, dict[str, list[dict[str, float]]]] = {}
        for c in clients:
            figures[c] = {target.mode: [] for target in servers}
            for number in range(rounds):
                order = servers[number % len(servers) :] + servers[: number % len(servers)]
                for target in order:
                    figures[c][target.mode].append(await one_round(target, c, requests))
                print(f"c={c} round {number + 1}/{rounds} done", file=sys.stderr)
    return summarise(figures, rounds, requests)


def summarise(
    figures: dict[int, dict[str, list[dict[str, float]]]], rounds: int, requests: int
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "rounds": rounds,
        "requests_per_round": requests,
        "load_average": [round(load, 2) for load in os.getloadavg()],
        "by_clients": {},
    }
    for c, by_mode in figures.items():
        medians = {
            mode: {
                "requests_per_second": statistics.median(r["requests_per_second"] for r in runs),
                # The mean, that is all rounds' CPU over all their requests: /proc counts CPU
                # in 10 ms ticks, so one round's figure moves in steps of 10 ms / requests
                # (0.2 ms with 48), and a median of such steps is one of them.
                "server_cpu_ms_per_request": statistics.fmean(
                    r["server_cpu_ms_per_request"] for r in runs
                ),
                "spans_per_request": statistics.median(r["spans_per_request"] for r in runs),
            }
            for mode, runs in by_mode.items()
        }
        for mode in by_mode:
            # Each checkout's modes as a ratio to its own "off", in the same round.
            off_mode = "off" + (BASE_SUFFIX if mode.endswith(BASE_SUFFIX) else "")
            off = [run["requests_per_second"] for run in by_mode[off_mode]]
            paired = [
                run["requests_per_second"] / base
                for run, base in zip(by_mode[mode], off, strict=True)
            ]
            medians[mode]["ratio_to_off"] = statistics.median(paired)
        result["by_clients"][str(c)] = medians
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Observability overhead (bench/bench_observability.py)",
        "",
        f"{result['when']}, {result['cpus']} CPUs; median of {result['rounds']} rounds, each "
        f"{result['requests_per_round']} one-rule dry-run requests sent by c clients at once; "
        "ratio to off: median of per-round ratios (a mode@base, to off@base); server CPU: "
        "all rounds' CPU over all their requests; load average at "
        f"the end {', '.join(str(load) for load in result.get('load_average', []))}.",
        "",
        "| clients | mode | requests/s | ratio to off | server CPU ms/request | spans/request |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for c, medians in result["by_clients"].items():
        for mode in medians:
            figures = medians[mode]
            lines.append(
                f"| {c} | {mode} | {figures['requests_per_second']:.0f} | "
                f"{figures['ratio_to_off']:.3f} | {figures['server_cpu_ms_per_request']:.2f} | "
                f"{figures['spans_per_request']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench_observability", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 rounds of 16 requests")
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--requests", type=int, default=48, help="per round, all clients")
    parser.add_argument("--clients", default="1,8", help="comma-separated client counts")
    parser.add_argument("--kubeconfig", type=Path, help="an existing cluster instead of ours")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument(
        "--compare-with",
        type=Path,
        metavar="DIR",
        help="also run every mode from this checkout's code (before and after a change)",
    )
    parser.add_argument("--serve", nargs=2, metavar=("MODE", "LISTEN"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        asyncio.run(serve(args.serve[0], args.serve[1], str(args.kubeconfig)))
        return 0
    rounds, requests = (5, 16) if args.quick else (args.rounds, args.requests)
    clients = [int(c) for c in args.clients.split(",")]
    with on_cluster(args.kubeconfig, "k8sailor-obs-") as cluster:
        result = asyncio.run(
            bench(cluster.kubeconfig, rounds, clients, requests, args.compare_with)
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "observability.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (args.out / "observability.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
