"""The cost of authentication and authorization: one-rule requests over mutual TLS with RBAC
authorization, as a ratio to the same requests in plaintext with none, in one run.

Run from the repository root: .venv/bin/python -m bench.bench_auth [--quick]

On one API server (our own local control plane unless --kubeconfig is given), three server
processes run side by side on the same Deployment:

  plain   plaintext, --authorization=none: today's `make run`
  tls     TLS without client certificates, --authorization=none: what encryption alone costs
  mtls    mutual TLS with a client certificate (CN bench-caller) and --authorization=rbac, the
          caller granted k8sailor-expose-internal by a RoleBinding: every call is
          authenticated from its certificate and authorized by a SubjectAccessReview (cached)

Each round sends the same load to each server in turn (the order rotating): `--workers`
concurrent callers, each sending one-rule dry-run requests (`80:8080`: a Deployment read and a
dry-run create on the API server, so nothing piles up) one after another for `--seconds`.
Quoted: requests per second, median latency and the server process's CPU time per request,
per path, medians over rounds, and the ratios to plain. On a busy shared machine the CPU
per request is the steadiest of the three. The first call of a new caller costs one
SubjectAccessReview; every later call within a minute is answered from the cache, which is
what the steady state measures.
A benchmark, not a test: figures on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes_asyncio import config as kube_config

from bench.callers import dry_run, grant_expose
from bench.measure import process_cpu_seconds
from bench.paths import create_workload
from bench.runner import on_cluster
from bench.tables import table
from client import Client, connect
from server.app import ServerConfig, serve_until_signalled
from server.auth.settings import Authorization, AuthSettings
from server.kube import load_api_client
from tests.controlplane import free_port
from tests.pki import CertificateAuthority

REPO = Path(__file__).resolve().parents[1]
CALLER = "bench-caller"
PATHS = ("plain", "tls", "mtls")


@dataclass(frozen=True)
class Round:
    path: str
    requests: int
    seconds: float
    latencies: list[float]
    cpu_seconds: float = 0.0  # the server process's user + system CPU during the round

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_ms_per_request(self) -> float:
        return self.cpu_seconds * 1000 / self.requests


async def _load(k8sailor: Client, namespace: str, workers: int, seconds: float) -> Round:
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < stop:
            latencies.append(await dry_run(k8sailor, namespace, 30))

    began = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return Round("", len(latencies), time.monotonic() - began, latencies)


@contextlib.contextmanager
def _server(kubeconfig: Path, mode: str, pki: Path, log: Path) -> Iterator[tuple[str, int]]:
    """A k8sailor server in its own process (no shared event loop or GIL with the load)."""
    port = free_port()
    command = [
        sys.executable, "-m", "bench.bench_auth", "--serve", mode, "--port", str(port),
        "--kubeconfig", str(kubeconfig), "--pki", str(pki),
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT)
    try:
        yield f"127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


async def _serve(args: argparse.Namespace) -> None:
    pki = Path(args.pki)
    cert, key = pki / "server.crt", pki / "server.key"
    auth = {
        "plain": AuthSettings(),
        "tls": AuthSettings(
            tls_cert_file=cert, tls_private_key_file=key, authorization=Authorization.NONE
        ),
        "mtls": AuthSettings(
            tls_cert_file=cert,
            tls_private_key_file=key,
            client_ca_file=pki / "ca.crt",
            authorization=Authorization.RBAC,
        ),
    }[args.serve]
    api = await load_api_client(args.kubeconfig, None, pool_size=32)
    async with api:
        await serve_until_signalled(
            api, ServerConfig(listen=f"127.0.0.1:{args.port}", grace=1.0, auth=auth)
        )


async def _prepare(kubeconfig: Path) -> str:
    """A namespace with Deployment "web", where CALLER may create ClusterIP Services."""
    namespace = f"k8sailor-bench-auth-{uuid.uuid4().hex[:6]}"
    api = await kube_config.new_client_from_config(config_file=str(kubeconfig))
    async with api:
        await create_workload(api, namespace)
        user = {"kind": "User", "name": CALLER, "apiGroup": "rbac.authorization.k8s.io"}
        await grant_expose(api, namespace, user)
    return namespace


@contextlib.asynccontextmanager
async def _ready(target: str, **tls: Any) -> AsyncIterator[Client]:
    deadline = time.monotonic() + 60
    async with connect(target, **tls) as k8sailor:
        while True:
            try:
                probe = k8sailor.create_services(
                    "web", ["80:8080"], namespace="default", dry_run=True, timeout=5
                )
                async for _ in probe:
                    pass
            except Exception as error:  # NOT_FOUND (serving) or UNAVAILABLE (not yet)
                if "NOT_FOUND" in str(error) or "PERMISSION_DENIED" in str(error):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{target} never served: {error}") from error
                await asyncio.sleep(0.2)
            else:
                break
        yield k8sailor


async def _bench(args: argparse.Namespace, kubeconfig: Path, work: Path) -> None:
    ca = CertificateAuthority("bench-ca")
    pki = work / "pki"
    ca.issue(common_name="k8sailor", server=True).write(pki, "server")
    (pki / "ca.crt").write_bytes(ca.pem)
    caller = ca.issue(common_name=CALLER)
    namespace = await _prepare(kubeconfig)
    tls = {
        "root_certificates": ca.pem,
        "certificate_chain": caller.certificate,
        "private_key": caller.private_key,
    }
    credentials: dict[str, dict[str, bytes]] = {
        "plain": {},
        "tls": {"root_certificates": ca.pem},
        "mtls": tls,
    }
    rounds: dict[str, list[Round]] = {path: [] for path in PATHS}
    async with contextlib.AsyncExitStack() as stack:
        clients: dict[str, Client] = {}
        pids: dict[str, int] = {}
        for path in PATHS:
            target, pids[path] = stack.enter_context(
                _server(kubeconfig, path, pki, work / f"{path}.log")
            )
            clients[path] = await stack.enter_async_context(_ready(target, **credentials[path]))
        # Warm-up: connections, the API client pools, the review caches.
        for k8sailor in clients.values():
            await _load(k8sailor, namespace, args.workers, 1.0)
        for number in range(args.rounds):
            # Each path goes first, second and third in turn.
            shift = number % len(PATHS)
            for path in PATHS[shift:] + PATHS[:shift]:
                cpu = process_cpu_seconds(pids[path])
                result = await _load(clients[path], namespace, args.workers, args.seconds)
                done = Round(path, result.requests, result.seconds, result.latencies,
                             process_cpu_seconds(pids[path]) - cpu)  # fmt: skip
                rounds[path].append(done)
                print(
                    f"round {number + 1} {path:5}: {done.per_second:7.1f} requests/s, "
                    f"median {statistics.median(done.latencies) * 1000:.2f} ms, "
                    f"server CPU {done.cpu_ms_per_request:.2f} ms/request",
                    flush=True,
                )
    rate = {path: statistics.median(r.per_second for r in rs) for path, rs in rounds.items()}
    latency = {
        path: statistics.median(statistics.median(r.latencies) for r in rs) * 1000
        for path, rs in rounds.items()
    }
    cpu_ms = {
        path: statistics.median(r.cpu_ms_per_request for r in rs) for path, rs in rounds.items()
    }
    print()
    print(
        f"one-rule dry-run requests, {args.workers} concurrent callers, {args.rounds} rounds "
        f"of {args.seconds:.0f} s per path (medians over rounds)"
    )
    # Unlike throughput on a busy shared machine, the CPU a server spends per request hardly
    # depends on what else runs.
    print(
        table(
            ("path", "requests/s", "median latency (ms)", "server CPU per request (ms)"),
            (
                (path, f"{rate[path]:.1f}", f"{latency[path]:.2f}", f"{cpu_ms[path]:.2f}")
                for path in PATHS
            ),
            "lrrr",
        )
    )
    for path, meaning in (("tls", "TLS, no authorization"), ("mtls", "mTLS + RBAC")):
        print(
            f"ratio {meaning} / plaintext: {rate[path] / rate['plain']:.3f}x throughput, "
            f"{latency[path] / latency['plain']:.3f}x median latency, "
            f"{cpu_ms[path] / cpu_ms['plain']:.3f}x server CPU per request"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.bench_auth", description=__doc__.split("\n")[0])
    parser.add_argument("--kubeconfig", help="an existing cluster (default: our own)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="3 rounds of 2 s")
    parser.add_argument("--serve", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--pki", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        logging.basicConfig(level=logging.WARNING)
        asyncio.run(_serve(args))
        return 0
    if args.quick:
        args.rounds, args.seconds = 3, 2.0
    with on_cluster(args.kubeconfig, "k8sailor-bench-auth-") as cluster:
        asyncio.run(_bench(args, cluster.kubeconfig, cluster.work_dir))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
