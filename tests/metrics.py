"""Reading a server's /metrics the way Prometheus does, for tests that count."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]


def scrape(port: int) -> Samples:
    """/metrics as {(sample name, sorted labels): value}, read by prometheus_client's parser."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much one sample grew between two scrapes (a sample not there yet counts as 0)."""
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def total_delta(before: Samples, after: Samples, name: str) -> float:
    """How much all samples of one name grew together."""
    return sum(value - before.get(key, 0.0) for key, value in after.items() if key[0] == name)
