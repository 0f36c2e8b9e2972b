"""The cost of authentication and authorization: one-rule requests over mutual TLS with RBAC
authorization, as a ratio to the same requests in plaintext with none, in one run.

Run from the repository root: .venv/bin/python -m bench.bench_auth [--quick]

On one API server (our own local control plane unless --kubeconfig is given), two server
processes run side by side on the same Deployment:

  plain   plaintext, --authorization=none: today's `make run`
  mtls    mutual TLS with a client certificate (CN bench-caller) and --authorization=rbac, the
          caller granted k8sailor-expose-internal by a RoleBinding: every call is
          authenticated from its certificate and authorized by a SubjectAccessReview (cached)

Each round sends the same load to each server in turn (order alternating): `--workers`
concurrent callers, each sending one-rule dry-run requests (`80:8080`: a Deployment read and a
dry-run create on the API server, so nothing piles up) one after another for `--seconds`.
Quoted: requests per second and median latency per path, medians over rounds, and the ratio
mtls / plain. The first call of a new caller costs one SubjectAccessReview; every later call
within a minute is answered from the cache, which is what the steady state measures.
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
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client as kube
from kubernetes_asyncio import config as kube_config

from client import Client, Outcome, connect
from server.app import ServerConfig, serve_until_signalled
from server.auth.settings import Authorization, AuthSettings
from server.kube import load_api_client
from tests import objects
from tests.controlplane import free_port, running
from tests.pki import CertificateAuthority

REPO = Path(__file__).resolve().parents[1]
CALLER = "bench-caller"
ROLE = REPO / "deploy" / "callers" / "k8sailor-expose-internal.yaml"


@dataclass(frozen=True)
class Round:
    path: str
    requests: int
    seconds: float
    latencies: list[float]

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


async def _load(k8sailor: Client, namespace: str, workers: int, seconds: float) -> Round:
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < stop:
            started = time.monotonic()
            results = [
                result
                async for result in k8sailor.create_services(
                    "web", ["80:8080"], namespace=namespace, dry_run=True, timeout=30
                )
            ]
            if [result.outcome for result in results] != [Outcome.CREATED]:
                raise RuntimeError(f"unexpected results: {results}")
            latencies.append(time.monotonic() - started)

    began = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return Round("", len(latencies), time.monotonic() - began, latencies)


@contextlib.contextmanager
def _server(kubeconfig: Path, mode: str, pki: Path, log: Path) -> Iterator[str]:
    """A k8sailor server in its own process (no shared event loop or GIL with the load)."""
    port = free_port()
    command = [
        sys.executable, "-m", "bench.bench_auth", "--serve", mode, "--port", str(port),
        "--kubeconfig", str(kubeconfig), "--pki", str(pki),
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


async def _serve(args: argparse.Namespace) -> None:
    pki = Path(args.pki)
    auth = (
        AuthSettings()
        if args.serve == "plain"
        else AuthSettings(
            tls_cert_file=pki / "server.crt",
            tls_private_key_file=pki / "server.key",
            client_ca_file=pki / "ca.crt",
            authorization=Authorization.RBAC,
        )
    )
    api = await load_api_client(args.kubeconfig, None, pool_size=32)
    async with api:
        config = ServerConfig(f"127.0.0.1:{args.port}", auth=auth, grace=1.0)
        await serve_until_signalled(api, config)


async def _prepare(kubeconfig: Path) -> str:
    """A namespace with Deployment "web", where CALLER may create ClusterIP Services."""
    import yaml

    namespace = f"k8sailor-bench-auth-{uuid.uuid4().hex[:6]}"
    api = await kube_config.new_client_from_config(config_file=str(kubeconfig))
    async with api:
        core = kube.CoreV1Api(api)
        await core.create_namespace(kube.V1Namespace(metadata=kube.V1ObjectMeta(name=namespace)))
        await kube.AppsV1Api(api).create_namespaced_deployment(
            namespace, objects.deployment("web", {"app": "web"}, [("http", 8080, "TCP")])
        )
        rbac = kube.RbacAuthorizationV1Api(api)
        role: Any = yaml.safe_load(ROLE.read_text())
        with contextlib.suppress(kube.ApiException):
            await rbac.create_cluster_role(role)
        binding: Any = {
            "metadata": {"name": "bench"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": role["metadata"]["name"]},
            "subjects": [{"kind": "User", "name": CALLER,
                          "apiGroup": "rbac.authorization.k8s.io"}],
        }  # fmt: skip
        await rbac.create_namespaced_role_binding(namespace, binding)
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
    rounds: dict[str, list[Round]] = {"plain": [], "mtls": []}
    with (
        _server(kubeconfig, "plain", pki, work / "plain.log") as plain_target,
        _server(kubeconfig, "mtls", pki, work / "mtls.log") as mtls_target,
    ):
        async with (
            _ready(plain_target) as plain,
            _ready(mtls_target, **tls) as mtls,
        ):
            clients = {"plain": plain, "mtls": mtls}
            # Warm-up: connections, the API client pools, the review caches.
            for k8sailor in clients.values():
                await _load(k8sailor, namespace, args.workers, 1.0)
            for number in range(args.rounds):
                order = ["plain", "mtls"] if number % 2 == 0 else ["mtls", "plain"]
                for path in order:
                    result = await _load(clients[path], namespace, args.workers, args.seconds)
                    rounds[path].append(Round(path, result.requests, result.seconds,
                                              result.latencies))  # fmt: skip
                    print(
                        f"round {number + 1} {path:5}: {result.per_second:7.1f} requests/s, "
                        f"median {statistics.median(result.latencies) * 1000:.2f} ms",
                        flush=True,
                    )
    rate = {path: statistics.median(r.per_second for r in rs) for path, rs in rounds.items()}
    latency = {
        path: statistics.median(statistics.median(r.latencies) for r in rs) * 1000
        for path, rs in rounds.items()
    }
    print()
    print(
        f"one-rule dry-run requests, {args.workers} concurrent callers, {args.rounds} rounds "
        f"of {args.seconds:.0f} s per path (medians over rounds)"
    )
    print("| path | requests/s | median latency (ms) |")
    print("| --- | ---: | ---: |")
    for path in ("plain", "mtls"):
        print(f"| {path} | {rate[path]:.1f} | {latency[path]:.2f} |")
    print(f"\nratio mtls+rbac / plaintext: {rate['mtls'] / rate['plain']:.3f}x throughput, "
          f"{latency['mtls'] / latency['plain']:.3f}x median latency")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.bench_auth", description=__doc__.split("\n")[0])
    parser.add_argument("--kubeconfig", help="an existing cluster (default: our own)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="3 rounds of 2 s")
    parser.add_argument("--serve", choices=["plain", "mtls"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--pki", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        logging.basicConfig(level=logging.WARNING)
        asyncio.run(_serve(args))
        return 0
    if args.quick:
        args.rounds, args.seconds = 3, 2.0
    with tempfile.TemporaryDirectory(prefix="k8sailor-bench-auth-") as scratch:
        work = Path(scratch)
        if args.kubeconfig:
            asyncio.run(_bench(args, Path(args.kubeconfig), work))
        else:
            with running(work / "controlplane") as plane:
                asyncio.run(_bench(args, plane.kubeconfig, work))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
