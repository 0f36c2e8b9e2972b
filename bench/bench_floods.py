"""A legitimate caller's latency while another peer floods k8sailor with random bearer tokens,
for two checkouts side by side in one run (a change's before and after).

Run from the repository root:
    .venv/bin/python -m bench.bench_floods --before DIR [--rounds 3] [--seconds 3]

DIR is another checkout of the repository (say `git worktree add --detach ../base main`); its
server package runs as "before", this checkout's as "after". On one API server (our own local
control plane unless --kubeconfig is given) the two servers run side by side, each in a process
of its own with TLS and --authorization=rbac, listening on all addresses. Each round, for each
condition and each server in turn (the order rotating):

  quiet          no flood
  no token       a flooder process sends one-rule requests without any credential, 64 at a
                 time on one connection, as fast as they are answered: what any unauthenticated
                 call costs, no review involved (the same on both; a reference)
  1 connection   the same, but each request with a new random bearer token
  reconnecting   the same, but each of the 64 sends 8 tokens on a connection of its own and
                 then opens a new one: the worst case for a bound per connection

The flooder connects to the machine's own non-loopback address (one client address); two
legitimate callers connect through loopback (another), each on a connection of its own, and
send one-rule dry-run requests one after another for --seconds once the flood has run for a
second: "new token" with a ServiceAccount token the server has not seen in every request (each
costs a TokenReview: how long authentication takes), "known token" with the same one every
time (reviewed once, then cached: what the flood costs a request otherwise). The ServiceAccount
may create ClusterIP Services, so its requests are answered CREATED. Quoted: the medians and
90th percentiles of their latencies over all rounds, per server and condition, the flood's rate
and how many TokenReviews the server made per second meanwhile (from its /metrics). A
benchmark, not a test: figures on a shared machine are noisy, the ratios in one run less so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from kubernetes_asyncio import client as kube
from kubernetes_asyncio import config as kube_config

from bench import flooder
from bench.callers import dry_run, grant_expose
from bench.flooder import flooding
from bench.measure import percentile
from bench.paths import create_workload
from bench.runner import checkout, on_cluster
from bench.tables import ratio, table
from client import Client, connect
from tests.controlplane import free_port
from tests.pki import CertificateAuthority
from tests.servers import wait_serving

REPO = Path(__file__).resolve().parents[1]
CALLER = "legit"
CONDITIONS = ("quiet", *flooder.CONDITIONS)
CALLERS = ("new token", "known token")
# Requests with a new token per server, condition and round, at most: tokens are minted before
# the run (TokenRequest), and a server must never have seen one.
MAX_NEW_TOKENS = 40


@dataclass
class Figures:
    """What one server measured under one condition, over all rounds."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {c: [] for c in CALLERS})
    flood_answered: int = 0
    flood_seconds: float = 0.0
    reviews: float = 0.0
    seconds: float = 0.0
    flood_codes: Counter[str] = field(default_factory=Counter)


# ------------------------------------------------------------------------- the servers


@dataclass(frozen=True)
class Server:
    name: str
    target: str
    metrics: str
    process: asyncio.subprocess.Process


@contextlib.asynccontextmanager
async def server(
    name: str, source: Path, kubeconfig: Path, pki: Path, ca_pem: bytes, log: Path
) -> AsyncIterator[Server]:
    """`python -m server` of the checkout at source, with TLS and RBAC, in its own process,
    listening on every address (TLS and RBAC: no --insecure needed)."""
    port = free_port()
    target, metrics = f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}"
    command = [
        sys.executable, "-m", "server", "--listen", f"0.0.0.0:{port}",
        "--kubeconfig", str(kubeconfig),
        "--tls-cert-file", str(pki / "server.crt"), "--tls-private-key-file",
        str(pki / "server.key"), "--authorization", "rbac", "--metrics-listen", metrics,
        "--log-level", "WARNING",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(source), "KUBECONFIG": str(kubeconfig)}
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            *command, cwd=source, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        await wait_serving(target, process, credentials=grpc.ssl_channel_credentials(ca_pem))
        yield Server(name, target, metrics, process)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()


def outside_address() -> str:
    """This machine's address on its way out (no packet is sent): not loopback, so that the
    flood comes from another client address than the legitimate callers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("203.0.113.1", 9))  # TEST-NET-3: routed, never reached
        address: str = probe.getsockname()[0]
    if address.startswith("127."):
        raise RuntimeError("this machine has no address but loopback to flood from")
    return address


def token_reviews(metrics: str) -> float:
    """TokenReviews the server has sent so far, from its /metrics."""
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("k8sailor_kube_requests_total{") and 'resource="tokenreviews"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


# ------------------------------------------------------------------------- the callers


async def _prepare(kubeconfig: Path, tokens: int) -> tuple[str, list[str]]:
    """A namespace with Deployment "web", a ServiceAccount that may create ClusterIP Services
    there, and `tokens` tokens of it for the audience k8sailor."""
    namespace = f"k8sailor-bench-floods-{uuid.uuid4().hex[:6]}"
    api = await kube_config.new_client_from_config(config_file=str(kubeconfig))
    async with api:
        await create_workload(api, namespace)
        core = kube.CoreV1Api(api)
        account: Any = {"metadata": {"name": CALLER}}
        await core.create_namespaced_service_account(namespace, account)
        subject = {"kind": "ServiceAccount", "name": CALLER, "namespace": namespace}
        await grant_expose(api, namespace, subject)
        body: Any = {"spec": {"audiences": ["k8sailor"], "expirationSeconds": 3600}}
        gate = asyncio.Semaphore(8)

        async def mint() -> str:
            async with gate:
                answer = await core.create_namespaced_service_account_token(CALLER, namespace, body)
            token: str = answer.status.token
            return token

        minted = await asyncio.gather(*(mint() for _ in range(tokens)))
    return namespace, list(minted)


async def _call(k8sailor: Client, namespace: str) -> float:
    return await dry_run(k8sailor, namespace, 60)


async def _measure(
    fresh: Client,
    fresh_file: Path,
    new_tokens: list[str],
    known: Client,
    namespace: str,
    seconds: float,
) -> dict[str, list[float]]:
    stop = time.monotonic() + seconds
    measured: dict[str, list[float]] = {c: [] for c in CALLERS}

    async def with_new_tokens() -> None:
        for token in new_tokens:
            if time.monotonic() >= stop:
                return
            await asyncio.to_thread(fresh_file.write_text, token)  # read for this call
            measured["new token"].append(await _call(fresh, namespace))

    async def with_the_known_token() -> None:
        while time.monotonic() < stop:
            measured["known token"].append(await _call(known, namespace))

    await asyncio.gather(with_new_tokens(), with_the_known_token())
    return measured


# ------------------------------------------------------------------------- the run


async def _bench(args: argparse.Namespace, before: Path, kubeconfig: Path, work: Path) -> None:
    sources = {"before": before, "after": REPO}
    ca = CertificateAuthority("bench-floods-ca")
    pki = work / "pki"
    outside = outside_address()
    ca.issue(common_name="k8sailor", server=True, ips=(outside,)).write(pki, "server")
    ca_file = pki / "ca.crt"
    ca_file.write_bytes(ca.pem)
    per_server = MAX_NEW_TOKENS * len(CONDITIONS) * args.rounds + 1
    namespace, tokens = await _prepare(kubeconfig, per_server)
    known_file = work / "known-token"
    known_file.write_text(tokens.pop())
    figures = {(name, c): Figures() for name in sources for c in CONDITIONS}
    async with contextlib.AsyncExitStack() as stack:
        servers: dict[str, Server] = {}
        fresh_files: dict[str, Path] = {}
        clients: dict[str, tuple[Client, Client]] = {}
        unused: dict[str, list[str]] = {}
        for name, source in sources.items():
            servers[name] = await stack.enter_async_context(
                server(name, source, kubeconfig, pki, ca.pem, work / f"{name}.log")
            )
            fresh_files[name] = work / f"{name}-new-token"
            fresh_files[name].write_text(known_file.read_text())
            target = servers[name].target
            fresh = await stack.enter_async_context(
                connect(target, root_certificates=ca.pem, token_file=fresh_files[name])
            )
            known = await stack.enter_async_context(
                connect(target, root_certificates=ca.pem, token_file=known_file)
            )
            clients[name] = (fresh, known)
            unused[name] = list(tokens)  # every server sees each token once at most
            for _ in range(3):  # warm-up: connections, the known token's review, the SAR
                await _call(fresh, namespace)
                await _call(known, namespace)
        for number in range(args.rounds):
            shift = number % len(sources)
            order = list(sources)[shift:] + list(sources)[:shift]
            for condition in CONDITIONS:
                for name in order:
                    port = servers[name].target.rsplit(":", 1)[1]
                    new_tokens = [unused[name].pop() for _ in range(MAX_NEW_TOKENS)]
                    async with flooding(
                        condition, f"{outside}:{port}", ca_file, namespace, work / "flooder.log"
                    ) as flood:
                        reviews = await asyncio.to_thread(token_reviews, servers[name].metrics)
                        began = time.monotonic()
                        fresh, known = clients[name]
                        measured = await _measure(
                            fresh, fresh_files[name], new_tokens, known, namespace, args.seconds
                        )
                        spent = time.monotonic() - began
                        reviews = (
                            await asyncio.to_thread(token_reviews, servers[name].metrics)
                        ) - reviews
                    done = figures[name, condition]
                    for caller in CALLERS:
                        done.latencies[caller] += measured[caller]
                    done.reviews += reviews
                    done.seconds += spent
                    done.flood_codes.update(flood["codes"])
                    done.flood_answered += sum(flood["codes"].values())
                    done.flood_seconds += flood["seconds"]
                    print(
                        f"round {number + 1} {name:6} {condition:12}: "
                        + ", ".join(
                            f"{caller} median {_ms(measured[caller], 50)} ms "
                            f"({len(measured[caller])})"
                            for caller in CALLERS
                        )
                        + f"; {reviews / spent:.0f} TokenReviews/s",
                        flush=True,
                    )
    _report(figures, list(sources), args)


def _ms(values: Sequence[float], q: float) -> str:
    return f"{percentile(values, q) * 1000:.1f}" if values else "-"


def _report(
    figures: dict[tuple[str, str], Figures], names: list[str], args: argparse.Namespace
) -> None:
    print()
    print(
        f"legitimate callers' one-rule dry-run requests over TLS with RBAC, {args.rounds} "
        f"rounds of {args.seconds:.0f} s per server and condition; flood: "
        f"{flooder.FLOOD_CONCURRENCY} requests at a time, each with a new random token (none "
        f"for 'no token'); load average now {os.getloadavg()[0]:.1f}"
    )
    latencies: list[tuple[str, ...]] = []
    for condition in CONDITIONS:
        for caller in CALLERS:
            cells = []
            for name in names:
                values = figures[name, condition].latencies[caller]
                cells.append(f"{_ms(values, 50)} / {_ms(values, 90)}")
            before = figures[names[0], condition].latencies[caller]
            after = figures[names[1], condition].latencies[caller]
            shown = ratio(
                percentile(after, 50) / percentile(before, 50) if before and after else None
            )
            latencies.append((condition, caller, *cells, shown))
    columns = ("before median / p90 (ms)", "after median / p90 (ms)", "after / before (median)")
    print(table(("condition", "caller", *columns), latencies, "llrrr"))
    print()
    floods: list[tuple[str, ...]] = []
    for condition in CONDITIONS[1:]:
        for name in names:
            done = figures[name, condition]
            rate = done.flood_answered / done.flood_seconds if done.flood_seconds else 0.0
            codes = ", ".join(f"{code} {count}" for code, count in done.flood_codes.most_common())
            reviews = f"{done.reviews / done.seconds:.0f}"
            floods.append((condition, name, f"{rate:.0f}", reviews, codes))
    columns = ("flood requests/s", "TokenReviews/s", "flood answers")
    print(table(("condition", "server", *columns), floods, "llrrl"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.bench_floods", description=__doc__.split("\n")[0])
    parser.add_argument("--before", help="the checkout whose server is 'before'")
    parser.add_argument("--kubeconfig", help="an existing cluster (default: our own)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    if not args.before:
        parser.error(
            "--before DIR: a checkout to compare with (git worktree add --detach DIR main)"
        )
    before = checkout(parser, "--before", args.before)
    with on_cluster(args.kubeconfig, "k8sailor-bench-floods-") as cluster:
        asyncio.run(_bench(args, before, cluster.kubeconfig, cluster.work_dir))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
