"""k8sailor servers for tests and the benchmark: in this process over a given API client, or
as a `k8sailor-server` process; and the one wait for a server to answer SERVING."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kubernetes_asyncio import client

from client import Client, connect
from server.app import RunningServer, ServerConfig, serving
from server.kube import CallObserver
from tests.controlplane import free_port, rss_mib

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent


@asynccontextmanager
async def k8sailor_over(
    api: client.ApiClient,
    observer: CallObserver | None = None,
    config: ServerConfig | None = None,
) -> AsyncIterator[Client]:
    """A real grpc.aio server on a free port that talks to the cluster through `api`, and a
    client connected to it through a real channel; both stop when the block ends. observer,
    if given, sees every call the server makes to the API server."""
    async with running_over(api, config, observer=observer) as (_, connected):
        yield connected


@asynccontextmanager
async def running_over(
    api: client.ApiClient,
    config: ServerConfig | None = None,
    *,
    observer: CallObserver | None = None,
) -> AsyncIterator[tuple[RunningServer, Client]]:
    """As k8sailor_over, also handing over the running server (its Deployment cache, port)."""
    chosen = config or ServerConfig(listen="127.0.0.1:0")
    if chosen.listen != "127.0.0.1:0":
        raise ValueError("a test's own server listens on 127.0.0.1:0")
    async with (
        serving(api, chosen, observer=observer) as running,
        connect(f"127.0.0.1:{running.port}") as connected,
    ):
        yield running, connected


class NeverServing(RuntimeError):
    """The server process exited, or did not report SERVING in time."""


async def wait_serving(
    target: str,
    process: asyncio.subprocess.Process | subprocess.Popen[bytes] | None = None,
    *,
    service: str = "",
    credentials: grpc.ChannelCredentials | None = None,
    within: float = 60.0,
) -> None:
    """Until the gRPC health service at target answers SERVING for `service` (as a kubelet's
    gRPC readiness probe asks); NeverServing if `process` exits first or `within` seconds pass.
    Start-up takes seconds on a loaded machine, so callers give generous bounds."""
    give_up = time.monotonic() + within
    channel = (
        grpc.aio.secure_channel(target, credentials)
        if credentials is not None
        else grpc.aio.insecure_channel(target)
    )
    async with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < give_up:
            code = process.poll() if isinstance(process, subprocess.Popen) else (
                process.returncode if process is not None else None
            )  # fmt: skip
            if code is not None:
                raise NeverServing(f"the server exited with {code} during start-up")
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.05)
    raise NeverServing(f"the server at {target} did not report SERVING within {within:.0f} s")


@dataclass(frozen=True)
class ServerProcess:
    process: asyncio.subprocess.Process
    target: str
    log: Path

    def rss(self) -> float:
        return rss_mib(self.process.pid)

    def log_tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


@asynccontextmanager
async def server_process(
    kubeconfig: Path,
    log_dir: Path,
    args: Sequence[str] = (),
    *,
    source: Path | None = None,
    stop_within: float = 15.0,
) -> AsyncIterator[ServerProcess]:
    """`k8sailor-server` in a process of its own on a free port (its RSS and CPU are its own,
    and it shares no event loop with the caller), logging to a file in log_dir; SIGTERM when
    the block ends. With `source`, `python -m server` from that directory runs instead (a
    patched copy of the repository, to measure a change)."""
    target = f"127.0.0.1:{free_port()}"
    executable = BIN / "k8sailor-server"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    command = [str(executable)] if source is None and executable.exists() else []
    if not command:
        command = [sys.executable, "-m", "server"]
    if source is not None:
        env["PYTHONPATH"] = str(source)
    command += ["--listen", target, "--kubeconfig", str(kubeconfig), *args]
    log = log_dir / f"k8sailor-server-{target.rsplit(':', 1)[1]}.log"
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            *command, cwd=source or REPO, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    running = ServerProcess(process, target, log)
    try:
        try:
            await wait_serving(target, process)
        except NeverServing as error:
            raise NeverServing(f"{error}:\n{running.log_tail()}") from error
        yield running
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), stop_within)
            except TimeoutError:
                process.kill()
                await process.wait()


async def never_sending(channel: grpc.aio.Channel, method: str) -> tuple[grpc.StatusCode, str]:
    """A call of method whose request message never comes (the client holds its stream open
    until the server ends the call): how the server ended it."""
    ended = asyncio.Event()

    async def nothing() -> AsyncIterator[bytes]:
        # Sends nothing until the call is over, and then ends, rather than being left
        # suspended: gRPC's task that consumes it would otherwise be destroyed pending, and
        # the generator finalized later, in whichever test runs then.
        await ended.wait()
        return
        yield b""  # an async generator that yields nothing

    call = channel.stream_stream(method, None, None)(nothing(), timeout=60)
    try:
        async for _ in call:
            pass
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    finally:
        ended.set()
        await asyncio.sleep(0.01)  # a turn for the consumer to see its iterator end
    return grpc.StatusCode.OK, ""
