"""What a call that proves nothing can cost the server: the 4 MiB request of two-byte empty
rules (about two million rules), sent over TLS with no credential to a `k8sailor-server`
process with RBAC on, and the same request from a caller with a valid client certificate.

Run from the repository root: .venv/bin/python -m bench.bench_unauthenticated [--before PATH]

Quoted per request: the server process's CPU seconds (user + system, from /proc) and its peak
RSS growth (the high-water mark is reset before each request through /proc/PID/clear_refs), and
the status the caller got. --before PATH measures the server code of another checkout (e.g. the
main branch, before a change) the same way, side by side in one run.

No API server is involved: neither an unauthenticated call nor a certificate needs one, and
both requests are refused before anything in the cluster is read, so the kubeconfig points at
a port where nothing listens. A benchmark, not a test: figures on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from k8sailor.v1 import exposure_pb2 as pb
from tests.controlplane import free_port
from tests.pki import CertificateAuthority, Issued
from tests.servers import wait_serving

REPO = Path(__file__).resolve().parents[1]
METHOD = "/k8sailor.v1.ExposureService/CreateServices"
MiB = 1024 * 1024


def empty_rules_request(size: int = 4 * MiB - 64) -> bytes:
    """CreateServicesRequest{namespace: "default", deployment: "web", rules: [Rule{}] * N},
    encoded by hand: each empty rule is two bytes (field 3, length 0)."""
    head = b"\x0a\x07default\x12\x03web"
    return head + b"\x1a\x00" * ((size - len(head)) // 2)


@dataclass(frozen=True)
class Cost:
    cpu_seconds: float
    rss_growth_mib: float
    status: str
    message: str


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise LookupError(key)


@asynccontextmanager
async def server(
    source: Path, directory: Path, ca: CertificateAuthority, *, mode: str
) -> AsyncIterator[str]:
    """A server process. mode "mtls": it requires a client certificate (the TLS handshake of
    a caller without one fails); "tls": it serves TLS and takes bearer tokens; both with RBAC.
    "plain": plaintext, no authorization."""
    cert, key = ca.issue(common_name="k8sailor", server=True).write(directory, "server")
    (directory / "ca.crt").write_bytes(ca.pem)
    kubeconfig = directory / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{free_port()}', "
        "insecure-skip-tls-verify: true}}]\n"
        "users: [{name: u, user: {token: unused}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    target, health = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("K8SAILOR_")}
    env["PYTHONPATH"] = str(source)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", "--listen", target, "--health-listen", health,
        "--kubeconfig", str(kubeconfig), "--deployment-cache", "off", "--log-level", "WARNING",
        *(["--tls-cert-file", str(cert), "--tls-private-key-file", str(key),
           "--authorization", "rbac"] if mode != "plain" else []),
        *(["--client-ca-file", str(directory / "ca.crt")] if mode == "mtls" else []),
        cwd=source, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await wait_serving(health, process, within=120)
        yield f"{target}|{process.pid}"
    finally:
        process.send_signal(signal.SIGTERM)
        await process.wait()


async def send(
    target: str,
    pid: int,
    request: bytes,
    credentials: grpc.ChannelCredentials | None,
    timeout: float,
) -> Cost:
    # The peak is reset first, so that what is read after is this request's alone.
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # noqa: ASYNC240 - /proc: no I/O wait
    rss_before = _status_kib(pid, "VmRSS")
    cpu_before = _cpu_seconds(pid)
    options = [("grpc.max_send_message_length", -1)]
    channel = (
        grpc.aio.insecure_channel(target, options=options)
        if credentials is None
        else grpc.aio.secure_channel(target, credentials, options=options)
    )
    async with channel:
        # Bytes in, bytes out: nothing encoded here.
        call = channel.unary_stream(METHOD, None, None)
        status, message = "OK", ""
        try:
            async for _ in call(request, timeout=timeout):
                pass
        except grpc.aio.AioRpcError as error:
            status, message = error.code().name, error.details() or ""
    await asyncio.sleep(0.5)  # the server's last accounting of the call
    growth = (_status_kib(pid, "VmHWM") - rss_before) / 1024
    return Cost(_cpu_seconds(pid) - cpu_before, growth, status, message)


async def measure(source: Path, rounds: int) -> dict[str, list[Cost]]:
    ca = CertificateAuthority("bench-ca")
    caller: Issued = ca.issue(common_name="bench-caller")
    request = empty_rules_request()
    anonymous = grpc.ssl_channel_credentials(root_certificates=ca.pem)
    with_certificate = grpc.ssl_channel_credentials(
        root_certificates=ca.pem,
        private_key=caller.private_key,
        certificate_chain=caller.certificate,
    )
    costs: dict[str, list[Cost]] = {}
    # The largest accepted request is parsed, then fails to read its Deployment (there is no
    # API server): its deadline ends the retries.
    for kind, mode, credentials, sent, timeout in (
        ("unauthenticated", "tls", anonymous, request, 300),
        ("authenticated", "mtls", with_certificate, request, 300),
        ("largest accepted", "plain", None, largest_request(), 10),
    ):
        costs[kind] = []
        with tempfile.TemporaryDirectory() as directory:
            async with server(source, Path(directory), ca, mode=mode) as running:
                target, pid = running.split("|")
                for _ in range(rounds):
                    costs[kind].append(await send(target, int(pid), sent, credentials, timeout))
    return costs


def largest_request() -> bytes:
    """For scale: the costliest request the server accepts and parses (256 rules of 256 ports
    each, spaces, names and protocols in every port; tests/e2e/test_hostile.py's worst
    request)."""

    def rule(i: int) -> str:
        return "web=" + ",".join(
            f" {1000 + p} : {2000 + p} / udp ( p{i % 10}-{p} ) " for p in range(256)
        )

    rules = [pb.Rule(raw=rule(i)) for i in range(256)]
    return pb.CreateServicesRequest(
        namespace="default", deployment="web", rules=rules, dry_run=True
    ).SerializeToString()


def report(name: str, costs: dict[str, list[Cost]]) -> None:
    for kind, runs in costs.items():
        cpu = statistics.median(c.cpu_seconds for c in runs)
        rss = statistics.median(c.rss_growth_mib for c in runs)
        peak = max(c.rss_growth_mib for c in runs)
        print(
            f"{name:>7} {kind:>16}: CPU {cpu:6.2f} s (median of {len(runs)}), RSS growth "
            f"{rss:7.1f} MiB (median), {peak:7.1f} MiB (max); {runs[0].status}: "
            f"{runs[0].message[:150]}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="a checkout whose server to measure too")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    request = empty_rules_request()
    print(f"request: {len(request):,} bytes, {(len(request) - 14) // 2:,} empty rules")
    if args.before is not None:
        report("before", await measure(args.before.resolve(), args.rounds))
    report("after", await measure(REPO, args.rounds))


if __name__ == "__main__":
    asyncio.run(main())
