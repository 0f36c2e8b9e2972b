"""What every benchmark runner does around its measurement: the cluster to run on (ours,
whose API server and etcd have their CPU counted, or --kubeconfig's), a scratch directory,
another checkout to compare with, and where the results go."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.controlplane import running


@dataclass(frozen=True)
class Cluster:
    """The API server a run uses, and what the run can say about it."""

    kubeconfig: Path
    work_dir: Path  # scratch space for the run, gone after it
    control_plane_pids: dict[str, int] = field(default_factory=dict)  # ours only
    about: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def on_cluster(kubeconfig: Path | str | None, prefix: str) -> Iterator[Cluster]:
    """--kubeconfig's cluster, or our own control plane (tests/controlplane) for the block."""
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        work_dir = Path(scratch)
        if kubeconfig is not None:
            yield Cluster(Path(kubeconfig), work_dir, about={"cluster": "given by --kubeconfig"})
            return
        with running(work_dir / "controlplane") as plane:
            about = {
                "cluster": "local control plane (tests/controlplane), started by the bench",
                "startup_seconds": plane.startup_seconds,
                "rss_mib_at_start": plane.rss_mib(),
            }
            pids = {"kube-apiserver": plane.apiserver_pid, "etcd": plane.etcd_pid}
            yield Cluster(plane.kubeconfig, work_dir, pids, about)
            about["rss_mib_at_end"] = plane.rss_mib()


def checkout(parser: argparse.ArgumentParser, option: str, value: Path | str) -> Path:
    """Another checkout of the repository whose server package a run measures too."""
    path = Path(value).resolve()
    if not (path / "server" / "__main__.py").is_file():
        parser.error(f"{option} {value}: no server/__main__.py there (not a checkout?)")
    return path


def results_dir(out: Path | None, prefix: str) -> Path:
    """--out, or a new temporary directory (a smoke run's figures are not kept)."""
    chosen = out or Path(tempfile.mkdtemp(prefix=prefix))
    chosen.mkdir(parents=True, exist_ok=True)
    return chosen


def write_json(out: Path, name: str, result: dict[str, Any]) -> None:
    (out / name).write_text(json.dumps(result, indent=1) + "\n")


def finished(machine: dict[str, Any]) -> dict[str, Any]:
    """The machine's description with the load average at the end added."""
    return machine | {"load_average_at_end": list(os.getloadavg())}


def say(line: str) -> None:
    """A progress line: on stderr, so that stdout carries only the report."""
    print(line, file=sys.stderr, flush=True)
