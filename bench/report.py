"""From runs to what people read: medians and ratios per block, the Markdown tables, the
verdicts against the targets, and the plot."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.measure import Plan, Run, median_of
from bench.workload import KUBECTL, LABELS, ONE, RAW, SPREAD

# The targets of issue 6.
TARGET_VS_RAW = 0.9
TARGET_VS_KUBECTL = 20.0
TARGET_RSS_GROWTH_MIB = 50.0


def summarise(
    plan: Plan, runs: Sequence[Run], blocks: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Medians per (N, c, path), and the ratios the targets are about."""
    kubectl_rates = {
        n: median_of([r for r in runs if r.path == KUBECTL and r.n == n], "rate")
        for n in plan.kubectl_sizes
    }
    measured = {n: rate for n, rate in kubectl_rates.items() if rate}
    rows = []
    for n in plan.sizes:
        # kubectl runs one process per Service, one after the other: its rate does not depend
        # on N, so a larger N is compared with the largest N it was run for.
        kubectl_n = n if n in measured else max(measured) if measured else None
        kubectl_rate = measured.get(kubectl_n) if kubectl_n is not None else None
        for c in plan.concurrencies:
            block = next((b for b in blocks if b["n"] == n and b["c"] == c), {})
            row: dict[str, Any] = {"n": n, "c": c, "kubectl_reference_n": kubectl_n}
            chosen_by_path = {
                path: [r for r in runs if r.path == path and r.n == n and r.c == c]
                for path in (RAW, ONE, SPREAD)
            }
            for path, chosen in chosen_by_path.items():
                row[path] = {
                    "rounds": len(chosen),
                    "rate": median_of(chosen, "rate"),
                    "rate_min": min((r.rate for r in chosen), default=None),
                    "rate_max": max((r.rate for r in chosen), default=None),
                    "p50_s": median_of(chosen, "p50_s"),
                    "p99_s": median_of(chosen, "p99_s"),
                    "first_s": median_of(chosen, "first_s"),
                    "seconds": median_of(chosen, "seconds"),
                    "errors": sum(r.errors for r in chosen),
                    "cpu_ms_per_service": _median_cpu([r.cpu_ms_per_service for r in chosen]),
                }
            row[KUBECTL] = {"rate": kubectl_rate}
            raw = row[RAW]["rate"]
            raw_by_round = {r.round: r.rate for r in chosen_by_path[RAW]}
            for path in (ONE, SPREAD):
                rate = row[path]["rate"]
                # Against raw: the median of each round's ratio, the two runs of a round being
                # next to each other in time, so slow drifts in the machine's load cancel out.
                per_round = [
                    r.rate / raw_by_round[r.round]
                    for r in chosen_by_path[path]
                    if raw_by_round.get(r.round)
                ]
                row[f"{path}_vs_raw"] = statistics.median(per_round) if per_round else None
                row[f"{path}_vs_raw_of_medians"] = rate / raw if rate and raw else None
                row[f"{path}_vs_kubectl"] = rate / kubectl_rate if rate and kubectl_rate else None
            row["server_rss_before_mib"] = block.get("server_rss_before_mib")
            row["server_rss_after_mib"] = block.get("server_rss_after_mib")
            rows.append(row)
    return rows


def _median_cpu(per_run: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per process, the median of the runs' CPU ms per Service."""
    who = sorted({key for cpu in per_run for key in cpu})
    return {key: statistics.median(cpu[key] for cpu in per_run if key in cpu) for key in who}


def _busy_warning(machine: dict[str, Any]) -> list[str]:
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


def _loads(values: Sequence[float] | None) -> str:
    return "?" if not values else " / ".join(f"{x:.1f}" for x in values)


def _num(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 1000:.1f}" if value < 0.1 else f"{value * 1000:,.0f}"


def markdown(result: dict[str, Any]) -> str:
    rows = result["summary"]
    m = result["machine"]
    lines = [
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, "
        f"{m['python']}, kube-apiserver {m['kube_apiserver']} + etcd on 127.0.0.1, "
        f"kubectl {m['kubectl']}; {m['date']}; load average (1, 5, 15 min) "
        f"{_loads(m.get('load_average_at_start'))} at start, "
        f"{_loads(m.get('load_average_at_end'))} at the end; server: "
        f"{result.get('server_from', 'this checkout')}.",
        *_busy_warning(m),
        "",
        "Services/s (median over rounds; N Services per run; k8sailor-server --max-concurrency "
        "c; the c-requests column sends min(c, N) concurrent requests of ~N/c rules). Against "
        "raw: the median of the rounds' own ratios; against kubectl: the ratio of medians:",
        "",
        "| N | c | raw | k8sailor 1 req | k8sailor c req | kubectl | 1 req / raw "
        "| c req / raw | 1 req / kubectl | c req / kubectl |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['n']} | {row['c']} | {_num(row[RAW]['rate'])} | {_num(row[ONE]['rate'])} "
            f"| {_num(row[SPREAD]['rate'])} | {_num(row[KUBECTL]['rate'], 1)} "
            f"| {_ratio(row[f'{ONE}_vs_raw'])} | {_ratio(row[f'{SPREAD}_vs_raw'])} "
            f"| {_ratio(row[f'{ONE}_vs_kubectl'])} | {_ratio(row[f'{SPREAD}_vs_kubectl'])} |"
        )
    lines += [
        "",
        "Per-rule latency p50 / p99 in ms (raw: each call's own time; k8sailor: from sending "
        "the request(s) to the rule's result), time to the first result, and the server's RSS "
        "before / after the block:",
        "",
        "| N | c | raw p50 / p99 | 1 req p50 / p99 | c req p50 / p99 | first result: raw "
        "/ 1 req / c req | last result, 1 req | server RSS MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        raw, one, spread = row[RAW], row[ONE], row[SPREAD]
        rss = f"{_num(row['server_rss_before_mib'], 1)} → {_num(row['server_rss_after_mib'], 1)}"
        lines.append(
            f"| {row['n']} | {row['c']} | {_ms(raw['p50_s'])} / {_ms(raw['p99_s'])} "
            f"| {_ms(one['p50_s'])} / {_ms(one['p99_s'])} "
            f"| {_ms(spread['p50_s'])} / {_ms(spread['p99_s'])} "
            f"| {_ms(raw['first_s'])} / {_ms(one['first_s'])} / {_ms(spread['first_s'])} "
            f"| {_ms(one['seconds'])} | {rss} |"
        )
    biggest = max(row["n"] for row in rows)
    lines += [
        "",
        f"CPU time per Service in ms at N={biggest} (median over rounds): the benchmark process "
        "(the raw client, or k8sailor's gRPC client), k8sailor-server, and the control plane:",
        "",
        "| c | raw: client | 1 req: server + client | c req: server + client "
        "| kube-apiserver (raw / 1 req) | etcd (raw / 1 req) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row["n"] != biggest:
            continue
        raw, one, spread = (row[p]["cpu_ms_per_service"] for p in (RAW, ONE, SPREAD))
        lines.append(
            f"| {row['c']} | {_num(raw.get('client'), 2)} "
            f"| {_num(one.get('server'), 2)} + {_num(one.get('client'), 2)} "
            f"| {_num(spread.get('server'), 2)} + {_num(spread.get('client'), 2)} "
            f"| {_num(raw.get('kube-apiserver'), 2)} / {_num(one.get('kube-apiserver'), 2)} "
            f"| {_num(raw.get('etcd'), 2)} / {_num(one.get('etcd'), 2)} |"
        )
    kubectl_runs = [r for r in result["runs"] if r["path"] == KUBECTL]
    if kubectl_runs:
        per_call = statistics.median(r["p50_s"] for r in kubectl_runs if r["p50_s"] is not None)
        lines += ["", f"kubectl: median {per_call * 1000:.0f} ms per `kubectl create service`."]
    memory = result.get("memory") or {}
    if memory:
        one_request = memory["one_request"]
        server_cpu = _median_cpu([r["cpu_ms_per_service"] for r in one_request]).get("server")
        lines += [
            "",
            f"Memory: one server (default --max-concurrency) created "
            f"{memory['services_created']:,} Services in {memory['requests']} requests of "
            f"{memory['rules_per_request']:,} rules (deleted after each, errors: "
            f"{memory['errors']}); RSS {memory['rss_start_mib']:.1f} MiB at start, "
            f"{memory['rss_after_warm_up_mib']:.1f} MiB after a 1,000-rule warm-up, "
            f"{memory['rss_after_each_request_mib'][-1]:.1f} MiB at the end: growth "
            f"{memory['growth_after_warm_up_mib']:+.1f} MiB after warm-up "
            f"(target < {TARGET_RSS_GROWTH_MIB:.0f} MB).",
            "",
            f"One request of {memory['rules_per_request']:,} rules (median of "
            f"{len(one_request)}): "
            f"{statistics.median(r['seconds'] for r in one_request):.2f} s, "
            f"{statistics.median(r['rate'] for r in one_request):,.0f} Services/s, first result "
            f"after {_ms(statistics.median(r['first_s'] for r in one_request if r['first_s']))} "
            f"ms, p50 / p99 "
            f"{_ms(statistics.median(r['p50_s'] for r in one_request if r['p50_s']))} / "
            f"{_ms(statistics.median(r['p99_s'] for r in one_request if r['p99_s']))} ms, "
            f"server CPU {_num(server_cpu, 2)} ms per Service.",
        ]
    parse = result.get("parse_build") or {}
    own = parse.get("this_request") or {}
    if own:
        lines += [
            "",
            f"Parse + build alone: {own['rules_per_second']:,.0f} rules/s for this benchmark's "
            f"requests ({own['what']}).",
        ]
    other = parse.get("bench_rules") or {}
    if other.get("rules_per_second"):
        figures = ", ".join(f"{k} {v:,.0f}/s" for k, v in other["rules_per_second"].items())
        lines += [f"`{other['command']}` (a mix of every rule shape): {figures}."]
    elif other:
        lines += [
            f"bench/bench_rules.py: no figures ({other.get('error') or other.get('output')})."
        ]
    lines += ["", "Targets:", ""] + [f"- {line}" for line in verdicts(result)]
    lines += ["", "How it was measured:", ""]
    lines += [f"- {LABELS.get(key, key)}: {note}" for key, note in result["notes"].items()]
    return "\n".join(lines)


def verdicts(result: dict[str, Any]) -> list[str]:
    rows = result["summary"]
    biggest = max(row["n"] for row in rows)
    bulk = [row for row in rows if row["n"] == biggest]
    out = []
    for against, target, style in (
        ("raw", TARGET_VS_RAW, "{:.2f}x"),
        ("kubectl", TARGET_VS_KUBECTL, "{:.1f}x"),
    ):
        for path in (ONE, SPREAD):
            key = f"{path}_vs_{against}"
            ratios = [(row["c"], row[key]) for row in bulk if row[key]]
            if ratios:
                out.append(
                    f"{LABELS[path]} vs {against} at N={biggest} (≥ {target:g}x): "
                    + _per_c(ratios, target, style)
                )
    early = [
        (row["n"], row["c"], row[ONE]["first_s"], row[ONE]["seconds"])
        for row in rows
        if row["n"] > 1 and row[ONE]["first_s"] is not None and row[ONE]["seconds"]
    ]
    if early:
        met = all(first < last for _, _, first, last in early)
        worst = max(first / last for _, _, first, last in early)
        out.append(
            "first result before the last Service is created (1 request, N > 1): met in "
            f"every block (first result at ≤ {worst:.0%} of the request's time)"
            if met
            else f"first result before the last Service: missed (worst {worst:.0%})"
        )
    memory = result.get("memory") or {}
    if memory:
        growth = memory["growth_after_warm_up_mib"]
        out.append(
            f"RSS growth over {memory['services_created']:,} Services (< "
            f"{TARGET_RSS_GROWTH_MIB:.0f} MB): {growth:+.1f} MiB — "
            f"{'met' if growth < TARGET_RSS_GROWTH_MIB else 'missed'}"
        )
    return out


def _per_c(ratios: Sequence[tuple[int, float]], target: float, style: str) -> str:
    """ "c=1 0.95x met, c=8 0.85x missed" and a count of the c values that meet the target."""
    listed = ", ".join(
        f"c={c} {style.format(ratio)} {'met' if ratio >= target else 'missed'}"
        for c, ratio in ratios
    )
    met = sum(ratio >= target for _, ratio in ratios)
    return f"{listed} — met at {met} of {len(ratios)} concurrencies"


def plot(result: dict[str, Any], destination: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    rows = result["summary"]
    sizes = sorted({row["n"] for row in rows})
    columns = 2 if len(sizes) > 1 else 1
    lines = math.ceil(len(sizes) / columns)
    figure, axes = plt.subplots(lines, columns, figsize=(6 * columns, 4.2 * lines), squeeze=False)
    styles = {RAW: ("tab:blue", "o"), ONE: ("tab:orange", "s"), SPREAD: ("tab:green", "^")}
    for axis, n in zip(axes.flat, sizes, strict=False):
        chosen = [row for row in rows if row["n"] == n]
        for path, (colour, marker) in styles.items():
            points = [(row["c"], row[path]) for row in chosen if row[path]["rate"]]
            if not points:
                continue
            xs = [c for c, _ in points]
            ys = [figures["rate"] for _, figures in points]
            low = [figures["rate"] - figures["rate_min"] for _, figures in points]
            high = [figures["rate_max"] - figures["rate"] for _, figures in points]
            axis.errorbar(
                xs, ys, yerr=[low, high], color=colour, marker=marker, capsize=3,
                label=LABELS[path],
            )  # fmt: skip
        kubectl_rate = chosen[0][KUBECTL]["rate"] if chosen else None
        if kubectl_rate:
            reference = chosen[0]["kubectl_reference_n"]
            note = "" if reference == n else f" (N={reference})"
            axis.axhline(
                kubectl_rate, color="tab:red", linestyle="--", label=LABELS[KUBECTL] + note
            )
        concurrencies = sorted({row["c"] for row in chosen})
        axis.set_xscale("log", base=2)
        axis.set_xticks(concurrencies, [str(c) for c in concurrencies])
        axis.set_yscale("log")
        axis.yaxis.set_major_formatter(ScalarFormatter())
        axis.yaxis.set_minor_formatter(NullFormatter())
        bottom, top = axis.get_ylim()
        if kubectl_rate:
            axis.set_ylim(min(bottom, kubectl_rate * 0.6), top)
        axis.set_xlabel("concurrency c (API calls in flight)")
        axis.set_ylabel("Services created per second")
        axis.set_title(f"N = {n} Services per run")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8, loc="best")
    for axis in list(axes.flat)[len(sizes) :]:
        axis.set_visible(False)
    m = result["machine"]
    figure.suptitle(
        f"k8sailor vs raw kubernetes_asyncio vs kubectl — median of rounds, bars min-max\n"
        f"{m['nproc']} CPUs, kube-apiserver {m['kube_apiserver']} + etcd on the same machine, "
        f"{m['date'][:10]}",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(destination, dpi=110)
    plt.close(figure)


def report(result: dict[str, Any], out: Path) -> None:
    """The plot and README.md beside latest.json, and the Markdown table on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    plot(result, out / "services_per_second.png")
    table = markdown(result)
    (out / "README.md").write_text(
        "# k8sailor benchmark: Services per second\n\n"
        "Written by `make bench` (`.venv/bin/python -m bench.bench_services`); raw figures in "
        "[latest.json](latest.json), plot in "
        "[services_per_second.png](services_per_second.png). The request shapes platform "
        "services send, against client-go, and the fairness figure: [shapes.md](shapes.md) "
        "(`make bench-shapes`).\n\n"
        f"![Services/s against concurrency](services_per_second.png)\n\n{table}\n\n"
        f"Full run: {result['seconds'] / 60:.1f} min.\n"
    )
    print(table)


# --------------------------------------------------------------------------- the shapes run

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
        rows[path] = {
            "rounds": len(chosen),
            "rate": median_of(chosen, "rate"),
            "rate_min": min((r.rate for r in chosen), default=None),
            "rate_max": max((r.rate for r in chosen), default=None),
            "p50_s": median_of(chosen, "p50_s"),
            "p99_s": median_of(chosen, "p99_s"),
            "errors": sum(r.errors for r in chosen),
            "first_error": next((r.first_error for r in chosen if r.first_error), ""),
            "cpu_ms_per_service": _median_cpu([r.cpu_ms_per_service for r in chosen]),
        }
        for against in ("raw", "client_go"):
            base = {r.round: r.rate for r in by_path.get(against, [])}
            ratios = [r.rate / base[r.round] for r in chosen if base.get(r.round)]
            rows[path][f"vs_{against}"] = statistics.median(ratios) if ratios else None
    return rows


def shapes_verdicts(shapes: dict[str, Any], rows: dict[str, Any]) -> list[str]:
    out = []
    for path, against, target in SHAPE_GOALS:
        ratio = rows.get(path, {}).get(f"vs_{against}")
        if ratio is None:
            continue
        out.append(
            f"{shapes['labels'][path]} vs {shapes['labels'][against]} ≥ {target:g}x: "
            f"{ratio:.2f}x — {'met' if ratio >= target else 'missed'}"
        )
    for fairness in shapes.get("fairness") or ():
        for which, target in FAIRNESS_GOALS.items():
            ratio = fairness[f"{which}_ratio"]
            out.append(
                f"one-rule latency beside a {fairness['big_rules']}-rule request vs alone, "
                f"--max-concurrency {_slots(fairness)}, {which} ≤ {target:g}x: "
                f"{ratio:.2f}x — {'met' if ratio <= target else 'missed'}"
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
        f"{m['kube_apiserver']} + etcd on 127.0.0.1; {m['date']}; load average (1, 5, 15 min) "
        f"{_loads(m.get('load_average_at_start'))} at start, "
        f"{_loads(m.get('load_average_at_end'))} at the end.",
        *_busy_warning(m),
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
        server = f"{_num(cpu.get('server'), 2)} + " if "server" in cpu else ""
        lines.append(
            f"| {shapes['labels'][path]} | {_num(row['rate'])} ({_num(row['rate_min'])}-"
            f"{_num(row['rate_max'])}) | {_ratio(row['vs_raw'])} | {_ratio(row['vs_client_go'])} "
            f"| {_ms(row['p50_s'])} / {_ms(row['p99_s'])} | {server}{_num(cpu.get('client'), 2)} "
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
                f"| {slots} | alone | {alone['count']} | {_ms(alone['p50_s'])} "
                f"| {_ms(alone['p99_s'])} | {_ms(alone['max_s'])} |",
                f"| {slots} | beside the big request | {busy['count']} | {_ms(busy['p50_s'])} "
                f"| {_ms(busy['p99_s'])} | {_ms(busy['max_s'])} |",
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
            f"{_ms(stale['p50_s'])} ms (p50; p99 {_ms(stale['p99_s'])}, max "
            f"{_ms(stale['max_s'])}, {stale['count']} times) after the API server answered the "
            f"create: {cache['stale_note']}.",
        ]
    parse = result.get("parse_build") or {}
    own = parse.get("this_request") or {}
    if own:
        lines += [
            "",
            f"Parse + build alone: {own['rules_per_second']:,.0f} rules/s on one core "
            f"({own['what']}).",
        ]
    lines += ["", "Goals (issue 11):", ""]
    lines += [f"- {line}" for line in shapes_verdicts(shapes, rows)]
    return "\n".join(lines)


def shapes_plot(result: dict[str, Any], destination: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = result["shapes"]
    rows = shapes_summary(shapes)
    paths = shapes["paths"]
    figure, (rates, fair) = plt.subplots(
        1, 2, figsize=(14, 4.8), gridspec_kw={"width_ratios": [2, 1.2]}
    )
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
        ratio = rows[path]["vs_raw"]
        if ratio is not None and path != "raw":
            rates.text(
                values[position] * 0.02, position, f"{ratio:.2f}x raw", va="center",
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
    m = result["machine"]
    figure.suptitle(
        f"k8sailor request shapes vs raw kubernetes_asyncio and client-go — "
        f"{result['plan']['services']} Services x {result['plan']['rounds']} rounds, "
        f"{m['nproc']} CPUs, kube-apiserver {m['kube_apiserver']}, {m['date'][:10]}",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(destination, dpi=110)
    plt.close(figure)


def shapes_report(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    shapes_plot(result, out / "shapes.png")
    table = shapes_markdown(result)
    (out / "shapes.md").write_text(
        "# k8sailor benchmark: request shapes\n\n"
        "Written by `make bench-shapes` (`.venv/bin/python -m bench.bench_services --shapes`); "
        "raw figures in [shapes.json](shapes.json).\n\n"
        f"![Services/s per request shape, and fairness](shapes.png)\n\n{table}\n\n"
        f"Run: {result['seconds'] / 60:.1f} min.\n"
    )
    print(table)
