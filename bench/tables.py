"""What every benchmark report writes the same way: numbers, ratios and milliseconds as
text, Markdown tables, and the line that says on what machine (and under what load) a run
was made."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def num(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def ms(value: float | None) -> str:
    """Seconds as milliseconds: one decimal below 100 ms, none above."""
    if value is None:
        return "—"
    return f"{value * 1000:.1f}" if value < 0.1 else f"{value * 1000:,.0f}"


def loads(values: Sequence[float] | None) -> str:
    return "?" if not values else " / ".join(f"{x:.1f}" for x in values)


def table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> str:
    """A Markdown table; `align` gives each column's alignment ("l" or "r", default "l")."""
    marks = [
        "---:" if (align[i] if i < len(align) else "l") == "r" else "---"
        for i in range(len(header))
    ]
    lines = [f"| {' | '.join(header)} |", f"|{'|'.join(marks)}|"]
    lines += [f"| {' | '.join(str(cell) for cell in row)} |" for row in rows]
    return "\n".join(lines)


def busy_warning(machine: dict[str, Any]) -> list[str]:
    """A warning when the machine was not idle as the run began. Only the start counts: by the
    end the load average includes this run's own control plane and clients."""
    at_start = machine.get("load_average_at_start") or ()
    if not at_start or at_start[0] <= machine["nproc"] / 2:
        return []
    return [
        "",
        f"The machine was not idle when this run began (1-minute load average {at_start[0]:.1f} "
        f"on {machine['nproc']} CPUs): the control plane, the clients and that other work share "
        "the same CPUs, so rates vary from round to round. Compare paths within this run (the "
        "ratios are per round), and see the CPU time per Service, which depends little on the "
        "load.",
    ]


def load_line(machine: dict[str, Any]) -> str:
    return (
        f"{machine['date']}; load average (1, 5, 15 min) "
        f"{loads(machine.get('load_average_at_start'))} at start, "
        f"{loads(machine.get('load_average_at_end'))} at the end"
    )


def parse_build(own: dict[str, Any] | None, where: str) -> list[str]:
    """The report's paragraph on parse + build alone (measure.request_pipeline's figures)."""
    if not own:
        return []
    rate = own["rules_per_second"]
    return ["", f"Parse + build alone: {rate:,.0f} rules/s {where} ({own['what']})."]
