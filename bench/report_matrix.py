"""The matrix run's report (`make bench`): medians and ratios per (N, c) block, the Markdown
tables, the verdicts against the targets of issue 6, and the plot."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.measure import Plan, Run, median_cpu, median_of, medians
from bench.plots import figure
from bench.tables import busy_warning, load_line, ms, num, parse_build, ratio
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
                row[path] = medians(chosen)
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


def markdown(result: dict[str, Any]) -> str:
    rows = result["summary"]
    m = result["machine"]
    lines = [
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, "
        f"{m['python']}, kube-apiserver {m['kube_apiserver']} + etcd on 127.0.0.1, "
        f"kubectl {m['kubectl']}; {load_line(m)}; server: "
        f"{result.get('server_from', 'this checkout')}.",
        *busy_warning(m),
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
            f"| {row['n']} | {row['c']} | {num(row[RAW]['rate'])} | {num(row[ONE]['rate'])} "
            f"| {num(row[SPREAD]['rate'])} | {num(row[KUBECTL]['rate'], 1)} "
            f"| {ratio(row[f'{ONE}_vs_raw'])} | {ratio(row[f'{SPREAD}_vs_raw'])} "
            f"| {ratio(row[f'{ONE}_vs_kubectl'])} | {ratio(row[f'{SPREAD}_vs_kubectl'])} |"
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
        rss = f"{num(row['server_rss_before_mib'], 1)} → {num(row['server_rss_after_mib'], 1)}"
        lines.append(
            f"| {row['n']} | {row['c']} | {ms(raw['p50_s'])} / {ms(raw['p99_s'])} "
            f"| {ms(one['p50_s'])} / {ms(one['p99_s'])} "
            f"| {ms(spread['p50_s'])} / {ms(spread['p99_s'])} "
            f"| {ms(raw['first_s'])} / {ms(one['first_s'])} / {ms(spread['first_s'])} "
            f"| {ms(one['seconds'])} | {rss} |"
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
            f"| {row['c']} | {num(raw.get('client'), 2)} "
            f"| {num(one.get('server'), 2)} + {num(one.get('client'), 2)} "
            f"| {num(spread.get('server'), 2)} + {num(spread.get('client'), 2)} "
            f"| {num(raw.get('kube-apiserver'), 2)} / {num(one.get('kube-apiserver'), 2)} "
            f"| {num(raw.get('etcd'), 2)} / {num(one.get('etcd'), 2)} |"
        )
    kubectl_runs = [r for r in result["runs"] if r["path"] == KUBECTL]
    if kubectl_runs:
        per_call = statistics.median(r["p50_s"] for r in kubectl_runs if r["p50_s"] is not None)
        lines += ["", f"kubectl: median {per_call * 1000:.0f} ms per `kubectl create service`."]
    memory = result.get("memory") or {}
    if memory:
        one_request = memory["one_request"]
        server_cpu = median_cpu([r["cpu_ms_per_service"] for r in one_request]).get("server")
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
            f"after {ms(statistics.median(r['first_s'] for r in one_request if r['first_s']))} "
            f"ms, p50 / p99 "
            f"{ms(statistics.median(r['p50_s'] for r in one_request if r['p50_s']))} / "
            f"{ms(statistics.median(r['p99_s'] for r in one_request if r['p99_s']))} ms, "
            f"server CPU {num(server_cpu, 2)} ms per Service.",
        ]
    parse = result.get("parse_build") or {}
    lines += parse_build(parse.get("this_request"), "for this benchmark's requests")
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
        f"c={c} {style.format(factor)} {'met' if factor >= target else 'missed'}"
        for c, factor in ratios
    )
    met = sum(factor >= target for _, factor in ratios)
    return f"{listed} — met at {met} of {len(ratios)} concurrencies"


def plot(result: dict[str, Any], destination: Path) -> None:
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    rows = result["summary"]
    sizes = sorted({row["n"] for row in rows})
    columns = 2 if len(sizes) > 1 else 1
    lines = math.ceil(len(sizes) / columns)
    title = "k8sailor vs raw kubernetes_asyncio vs kubectl — median of rounds, bars min-max"
    size = (6 * columns, 4.2 * lines)
    with figure(
        destination, title, result["machine"], lines, columns, figsize=size, squeeze=False
    ) as (_, axes):
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


def report(result: dict[str, Any], out: Path) -> None:
    """The plot and README.md beside latest.json, and the Markdown table on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    plot(result, out / "services_per_second.png")
    table = markdown(result)
    (out / "README.md").write_text(
        "# k8sailor benchmark: Services per second\n\n"
        "Written by `make bench` (`.venv/bin/python -m bench.bench_matrix`); raw figures in "
        "[latest.json](latest.json), plot in "
        "[services_per_second.png](services_per_second.png). The request shapes platform "
        "services send, against client-go, and the fairness figure: [shapes.md](shapes.md) "
        "(`make bench-shapes`).\n\n"
        f"![Services/s against concurrency](services_per_second.png)\n\n{table}\n\n"
        f"Full run: {result['seconds'] / 60:.1f} min.\n"
    )
    print(table)
