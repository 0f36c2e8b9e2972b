"""`python -m tests.controlplane build|up|down|status`: the local control plane for people.

`up` starts etcd, kube-apiserver and kube-controller-manager in the background (data, logs
and kubeconfig under .cluster/) and prints `export KUBECONFIG=...`; a second `up` finds them
running and only prints the line again. `down` stops exactly the processes `up` recorded.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tests.controlplane import (
    ControlPlaneError,
    RunningControlPlane,
    ensure_binaries,
    is_alive,
    kubernetes_version,
    start,
    stop,
)

DEFAULT_DIR = Path(__file__).resolve().parents[2] / ".cluster"


def _state_file(data_dir: Path) -> Path:
    return data_dir / "state.json"


def _load(data_dir: Path) -> RunningControlPlane | None:
    try:
        return RunningControlPlane.from_json(_state_file(data_dir).read_text())
    except (OSError, ValueError, KeyError):
        return None


def ensure_running(data_dir: Path) -> RunningControlPlane:
    """The control plane recorded in data_dir if all its processes live, else a new one."""
    plane = _load(data_dir)
    if plane is not None and is_alive(plane):
        print(f"# control plane already running at {plane.server}", file=sys.stderr)
        return plane
    if plane is not None:
        stop(plane)  # one of them died: do not leave the others behind
    plane = start(data_dir, tie_to_parent=False)
    _state_file(data_dir).write_text(plane.to_json() + "\n")
    rss = ", ".join(f"{name} {mib:.0f} MiB" for name, mib in plane.rss_mib().items())
    print(
        f"# kube-apiserver {kubernetes_version()} ready at {plane.server} "
        f"in {plane.startup_seconds:.1f} s (RSS {rss}); logs in {data_dir}",
        file=sys.stderr,
    )
    return plane


def up(data_dir: Path) -> int:
    print(f"export KUBECONFIG={ensure_running(data_dir).kubeconfig}")
    return 0


def down(data_dir: Path) -> int:
    plane = _load(data_dir)
    if plane is None:
        print("# no control plane recorded in " + str(data_dir), file=sys.stderr)
        return 0
    stop(plane)
    _state_file(data_dir).unlink(missing_ok=True)
    print(
        f"# stopped kube-controller-manager (pid {plane.controller_manager_pid}), "
        f"kube-apiserver (pid {plane.apiserver_pid}) and etcd (pid {plane.etcd_pid})"
    )
    return 0


def status(data_dir: Path) -> int:
    plane = _load(data_dir)
    if plane is None or not is_alive(plane):
        print("# not running")
        return 1
    print(f"# running at {plane.server}; pids {', '.join(map(str, plane.pids()))}")
    print(f"export KUBECONFIG={plane.kubeconfig}")
    return 0


def build() -> int:
    started = time.monotonic()
    binaries = ensure_binaries()
    built = ", ".join(map(str, (binaries.kube_apiserver, binaries.kube_controller_manager)))
    print(f"# {built} and {binaries.etcd} ({time.monotonic() - started:.1f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.controlplane", description=__doc__)
    parser.add_argument("command", choices=["build", "up", "down", "status"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="data, logs and kubeconfig")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            return build()
        if args.command == "up":
            return up(args.dir)
        if args.command == "down":
            return down(args.dir)
        return status(args.dir)
    except ControlPlaneError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
