"""A CallObserver that writes down whose turn (server.kube.fairness share) each API call took: the
observer is told inside the call's slot, in the calling task's context, so current_share() there
is the share the call was scheduled as."""

from __future__ import annotations

from dataclasses import dataclass, field

from server.kube.fairness import current_share


@dataclass
class Turns:
    calls: list[tuple[str, str, str]] = field(default_factory=list)  # verb, resource, share

    def call_started(self, verb: str, resource: str) -> None:
        self.calls.append((verb, resource, current_share().name))

    def call_finished(self, verb: str, resource: str, code: str, seconds: float) -> None:
        pass

    def call_retried(self, verb: str, resource: str, reason: str) -> None:
        pass

    def shares(self, resource: str) -> set[str]:
        """The shares that calls on resource took."""
        return {share for _, called, share in self.calls if called == resource}
