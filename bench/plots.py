"""The one way the benchmarks draw: matplotlib without a display, a title that names the
machine and the API server, saved as a PNG beside the report."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def figure(
    destination: Path, title: str, machine: dict[str, Any], *grid: int, **subplots: Any
) -> Iterator[tuple[Any, Any]]:
    """plt.subplots(*grid, **subplots) for the block; then the title (with the machine's
    CPUs, kube-apiserver and date), a tight layout, and the PNG at destination."""
    import matplotlib

    matplotlib.use("Agg")  # no display: benchmarks run on servers and in CI
    import matplotlib.pyplot as plt

    drawn, axes = plt.subplots(*grid, **subplots)
    try:
        yield drawn, axes
        drawn.suptitle(
            f"{title}\n{machine['nproc']} CPUs, kube-apiserver {machine['kube_apiserver']} "
            f"+ etcd on the same machine, {machine['date'][:10]}",
            fontsize=10,
        )
        drawn.tight_layout()
        drawn.savefig(destination, dpi=110)
    finally:
        plt.close(drawn)
