"""The shapes run's report (`make bench-shapes`): per request shape, the median rate, its
ratios to raw and client-go, CPU per Service; the fairness and cache figures; the goals of
issue 11; the plot."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bench.measure import Run, median_of, medians
from bench.plots import figure
from bench.shapes import SHAPES, before_path
from bench.tables import (
    busy_warning,
    load_line,
    ms,
    num,
    parse_build,
    ratio,
    table,
)

# The goals of issue 11, as (path, against, target).
SHAPE_GOALS = (
    ("k8s_1x32", "raw", 0.9),
    ("k8s_5x32", "raw", 0.95),
    ("k8s_200", "raw", 0.9),
    ("k8s_1x32", "client_go", 0.9),
    ("k8s_5x32", "client_go", 0.9),
    ("k8s_200", "client_go", 0.9),
)
FAIRNESS_GOALS = {"p50": 2.0, "p99": 3.0}


def shapes_summary(shapes: dict[str, Any]) -> dict[str, Any]:
    """Per path: median rate over rounds and its spread, latency, CPU; and, against raw and
    client-go, the median of each round's own ratio (the paths of a round ran back to back,
    so slow drifts in the machine's load cancel out)."""
    runs = [Run(**run) for run in shapes["runs"]]
    by_path = {path: [r for r in runs if r.path == path] for path in shapes["paths"]}
    rows: dict[str, Any] = {}
    for path, chosen in by_path.items():
        rows[path] = medians(chosen)
        for against in ("raw", "client_go"):
            base = {r.round: r.rate for r in by_path.get(against, [])}
            ratios = [r.rate / base[r.round] for r in chosen if base.get(r.round)]
            rows[path][f"vs_{against}"] = statistics.median(ratios) if ratios else None
    return rows


def shapes_verdicts(shapes: dict[str, Any], rows: dict[str, Any]) -> list[str]:
    out = []
    for path, against, target in SHAPE_GOALS:
        factor = rows.get(path, {}).get(f"vs_{against}")
        if factor is None:
            continue
        out.append(
            f"{shapes['labels'][path]} vs {shapes['labels'][against]} ≥ {target:g}x: "
            f"{factor:.2f}x — {'met' if factor >= target else 'missed'}"
        )
    for fairness in shapes.get("fairness") or ():
        for which, target in FAIRNESS_GOALS.items():
            factor = fairness[f"{which}_ratio"]
            out.append(
                f"one-rule latency beside a {fairness['big_rules']}-rule request vs alone, "
                f"--max-concurrency {_slots(fairness)}, {which} ≤ {target:g}x: "
                f"{factor:.2f}x — {'met' if factor <= target else 'missed'}"
            )
    return out


def _slots(fairness: dict[str, Any]) -> str:
    """The fairness case's --max-concurrency, and its --concurrency-limit when it had one."""
    limit = fairness.get("limit")
    return f"{fairness['server_concurrency']}" + (f" {limit}" if limit else "")


def shapes_markdown(result: dict[str, Any]) -> str:
    shapes = result["shapes"]
    rows = shapes_summary(shapes)
    m = result["machine"]
    lines = [
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['python']}, kube-apiserver "
        f"{m['kube_apiserver']} + etcd on 127.0.0.1; {load_line(m)}.",
        *busy_warning(m),
        "",
        f"{result['plan']['services']} ClusterIP Services per path and round, "
        f"{result['plan']['rounds']} rounds, the paths taking turns in every round; "
        "k8sailor-server --max-concurrency 32. Ratios: the median of the rounds' own ratios.",
        "",
        "| path | Services/s, median (min-max) | vs raw | vs client-go | p50 / p99 ms | "
        "server + client CPU ms per Service | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for path in shapes["paths"]:
        row = rows[path]
        cpu = row["cpu_ms_per_service"]
        server = f"{num(cpu.get('server'), 2)} + " if "server" in cpu else ""
        lines.append(
            f"| {shapes['labels'][path]} | {num(row['rate'])} ({num(row['rate_min'])}-"
            f"{num(row['rate_max'])}) | {ratio(row['vs_raw'])} | {ratio(row['vs_client_go'])} "
            f"| {ms(row['p50_s'])} / {ms(row['p99_s'])} | {server}{num(cpu.get('client'), 2)} "
            f"| {row['errors']} |"
        )
    fairness_runs = shapes.get("fairness") or []
    if fairness_runs:
        lines += [
            "",
            f"Fairness: one-rule requests one after another, alone and while a "
            f"{fairness_runs[0]['big_rules']}-rule request runs on the same server:",
            "",
            "| --max-concurrency | one-rule request | samples | p50 ms | p99 ms | max ms |",
            "|---:|---|---:|---:|---:|---:|",
        ]
        for fairness in fairness_runs:
            slots = _slots(fairness)
            alone, busy = fairness["alone"], fairness["busy"]
            lines += [
                f"| {slots} | alone | {alone['count']} | {ms(alone['p50_s'])} "
                f"| {ms(alone['p99_s'])} | {ms(alone['max_s'])} |",
                f"| {slots} | beside the big request | {busy['count']} | {ms(busy['p50_s'])} "
                f"| {ms(busy['p99_s'])} | {ms(busy['max_s'])} |",
                f"| {slots} | ratio | | {fairness['p50_ratio']:.2f}x "
                f"| {fairness['p99_ratio']:.2f}x | |",
            ]
    cache = shapes.get("cache") or {}
    if cache:
        size = cache["bytes_per_deployment"]
        stale = cache["stale_after_recreate"]
        lines += [
            "",
            f"Deployment cache: {size['bytes']:,.0f} bytes per Deployment ({size['what']}; "
            f"{size['deployments']:,} Deployments). After a Deployment is deleted and created "
            f"again under its name, the cache answered with the new uid "
            f"{ms(stale['p50_s'])} ms (p50; p99 {ms(stale['p99_s'])}, max "
            f"{ms(stale['max_s'])}, {stale['count']} times) after the API server answered the "
            f"create: {cache['stale_note']}.",
        ]
    lines += parse_build((result.get("parse_build") or {}).get("this_request"), "on one core")
    if shapes.get("before"):
        lines += ["", before_after_markdown(shapes)]
    lines += ["", "Goals (issue 11):", ""]
    lines += [f"- {line}" for line in shapes_verdicts(shapes, rows)]
    return "\n".join(lines)


def shapes_plot(result: dict[str, Any], destination: Path) -> None:
    shapes = result["shapes"]
    rows = shapes_summary(shapes)
    paths = shapes["paths"]
    plan = result["plan"]
    title = (
        "k8sailor request shapes vs raw kubernetes_asyncio and client-go — "
        f"{plan['services']} Services x {plan['rounds']} rounds"
    )
    with figure(
        destination, title, result["machine"], 1, 2, figsize=(14, 4.8),
        gridspec_kw={"width_ratios": [2, 1.2]},
    ) as (_, (rates, fair)):  # fmt: skip
        values = [rows[p]["rate"] or 0 for p in paths]
        low = [v - (rows[p]["rate_min"] or v) for p, v in zip(paths, values, strict=True)]
        high = [(rows[p]["rate_max"] or v) - v for p, v in zip(paths, values, strict=True)]
        colours = ["tab:blue", "tab:gray"] + ["tab:orange"] * (len(paths) - 2)
        positions = range(len(paths))
        rates.barh(positions, values, xerr=[low, high], color=colours, capsize=3)
        rates.set_yticks(list(positions), [shapes["labels"][p] for p in paths], fontsize=8)
        rates.invert_yaxis()
        rates.set_xlabel("Services created per second (median of rounds, bars min-max)")
        for position, path in zip(positions, paths, strict=True):
            factor = rows[path]["vs_raw"]
            if factor is not None and path != "raw":
                rates.text(
                    values[position] * 0.02, position, f"{factor:.2f}x raw", va="center",
                    color="white", fontsize=8,
                )  # fmt: skip
        fairness_runs = shapes.get("fairness") or []
        if fairness_runs:
            labels, alone, busy = [], [], []
            for fairness in fairness_runs:
                for which in ("p50", "p99"):
                    labels.append(f"{which}\n" + _slots(fairness).replace(" ", "\n"))
                    alone.append(fairness["alone"][f"{which}_s"] * 1000)
                    busy.append(fairness["busy"][f"{which}_s"] * 1000)
            xs = range(len(labels))
            fair.bar([x - 0.2 for x in xs], alone, width=0.4, label="alone")
            fair.bar(
                [x + 0.2 for x in xs], busy, width=0.4,
                label=f"beside a {fairness_runs[0]['big_rules']}-rule request",
            )  # fmt: skip
            fair.set_xticks(list(xs), labels, fontsize=7)
            fair.set_xlabel("--max-concurrency and limit", fontsize=8)
            fair.set_yscale("log")
            fair.set_ylabel("one-rule request latency, ms")
            fair.legend(fontsize=8)
            fair.set_title("fairness", fontsize=10)


def before_after(shapes: dict[str, Any]) -> list[dict[str, Any]]:
    """Per request shape run on both checkouts: the server process's CPU ms per Service
    created on each (median over rounds), and after / before, both as the ratio of those
    medians and as the median of the rounds' own ratios (a round's two runs ran back to back,
    so slow drifts in the machine's load cancel out)."""
    runs = [Run(**run) for run in shapes["runs"]]
    rows = []
    for path in SHAPES:
        if before_path(path) not in shapes["paths"]:
            continue
        cpu = {
            which: {r.round: r.cpu_ms_per_service["server"] for r in runs
                    if r.path == name and "server" in r.cpu_ms_per_service}
            for which, name in (("before", before_path(path)), ("after", path))
        }  # fmt: skip
        rates = {
            which: median_of([r for r in runs if r.path == name], "rate")
            for which, name in (("before", before_path(path)), ("after", path))
        }
        medians = {
            which: statistics.median(by_round.values()) if by_round else None
            for which, by_round in cpu.items()
        }
        paired = [cpu["after"][k] / cpu["before"][k] for k in cpu["after"] if cpu["before"].get(k)]
        of_medians = (
            medians["after"] / medians["before"]
            if medians["after"] is not None and medians["before"]
            else None
        )
        rows.append(
            {
                "path": path,
                "label": shapes["labels"][path],
                "server_cpu_ms_per_service": medians,
                "server_cpu_ms_per_service_by_round": cpu,
                "after_over_before": of_medians,
                "after_over_before_per_round_median": statistics.median(paired) if paired else None,
                "rate": rates,
            }
        )
    return rows


def before_after_markdown(shapes: dict[str, Any]) -> str:
    rows = before_after(shapes)
    return (
        f"Server CPU per Service created, before ({shapes['before']}) and after (this "
        "checkout), each a k8sailor-server process of its own in the same rounds (median over "
        "rounds; after / before: the ratio of the medians, and the median of the rounds' own "
        "ratios):\n\n"
        + table(
            (
                "request shape",
                "before: server CPU ms per Service",
                "after",
                "after / before",
                "per round",
                "Services/s before / after",
            ),
            (
                (
                    row["label"],
                    num(row["server_cpu_ms_per_service"]["before"], 3),
                    num(row["server_cpu_ms_per_service"]["after"], 3),
                    ratio(row["after_over_before"]),
                    ratio(row["after_over_before_per_round_median"]),
                    f"{num(row['rate']['before'])} / {num(row['rate']['after'])}",
                )
                for row in rows
            ),
            "lrrrrr",
        )
    )


def shapes_report(result: dict[str, Any], out: Path, stem: str = "shapes") -> None:
    """{stem}.md and {stem}.png beside {stem}.json, and the tables on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    shapes_plot(result, out / f"{stem}.png")
    text = shapes_markdown(result)
    command = ".venv/bin/python -m bench.bench_shapes"
    if result["shapes"].get("before"):
        command += " --before DIR"
    (out / f"{stem}.md").write_text(
        "# k8sailor benchmark: request shapes\n\n"
        f"Written by `make bench-shapes` (`{command}`); "
        f"raw figures in [{stem}.json]({stem}.json).\n\n"
        f"![Services/s per request shape, and fairness]({stem}.png)\n\n{text}\n\n"
        f"Run: {result['seconds'] / 60:.1f} min.\n"
    )
    print(text)
