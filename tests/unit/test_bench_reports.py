"""The benchmark's reports read the figures they were given: before/after server CPU per
Service (what the layout issue's closing note quotes), and the Markdown table writer."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from bench.measure import Run
from bench.report_shapes import before_after
from bench.shapes import BIG, ONE, before_path
from bench.tables import table


def _run(path: str, round_: int, server_ms: float, rate: float = 100.0) -> Run:
    return Run(
        path=path, n=100, c=32, round=round_, requests=1, seconds=1.0, rate=rate, created=100,
        errors=0, first_s=None, p50_s=None, p99_s=None, max_s=None, completion_p50_s=None,
        rss_before_mib=None, rss_after_mib=None, cpu_ms_per_service={"server": server_ms},
    )  # fmt: skip


def test_before_after_compares_the_server_cpu_per_service_of_each_shape() -> None:
    runs = [
        _run(BIG, 0, 1.0),
        _run(BIG, 1, 1.2),
        _run(BIG, 2, 1.1),
        _run(before_path(BIG), 0, 2.0),
        _run(before_path(BIG), 1, 2.0),
        _run(before_path(BIG), 2, 2.4),
    ]
    paths = [BIG, before_path(BIG)]
    shapes = {
        "paths": paths,
        "labels": {path: path for path in paths},
        "runs": [asdict(run) for run in runs],
    }
    (row,) = before_after(shapes)  # ONE and FIVE did not run on both: no row
    assert row["path"] == BIG
    assert row["server_cpu_ms_per_service"] == {"before": 2.0, "after": 1.1}
    assert row["after_over_before"] == pytest.approx(0.55)
    # The rounds' own ratios: 0.5, 0.6, 1.1 / 2.4.
    assert row["after_over_before_per_round_median"] == pytest.approx(0.5)


def test_before_after_is_empty_without_another_checkout() -> None:
    shapes = {"paths": [ONE], "labels": {ONE: ONE}, "runs": [asdict(_run(ONE, 0, 1.0))]}
    assert before_after(shapes) == []


def test_table_aligns_numbers_right() -> None:
    assert table(("path", "rate"), [("raw", "12"), ("k8s", "9")], "lr") == (
        "| path | rate |\n|---|---:|\n| raw | 12 |\n| k8s | 9 |"
    )
