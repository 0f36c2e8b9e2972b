"""A CallObserver that remembers what it was told, for tests that check what reached the API."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class RecordingObserver:
    started: list[tuple[str, str]] = field(default_factory=list)
    finished: list[tuple[str, str, str]] = field(default_factory=list)
    retried: list[tuple[str, str, str]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def call_started(self, verb: str, resource: str) -> None:
        self.started.append((verb, resource))

    def call_finished(self, verb: str, resource: str, code: str, seconds: float) -> None:
        self.finished.append((verb, resource, code))
        self.seconds.append(seconds)

    def call_retried(self, verb: str, resource: str, reason: str) -> None:
        self.retried.append((verb, resource, reason))

    def codes(self) -> Counter[str]:
        return Counter(code for _, _, code in self.finished)

    def retry_reasons(self) -> Counter[str]:
        return Counter(reason for _, _, reason in self.retried)
