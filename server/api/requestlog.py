"""The request log: one structured line per RPC, who asked for what and how it ended.

It is the audit record: fields are added, never renamed or removed. Every RPC's line has the
same fields; each RPC adds its own (Details) in their places among them. log_request writes
every line: the servicers' (server.api.calls) and the edge's, for a call it refused before a
servicer saw it (server.api.edge: the request's size, "bytes", where its results would be).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import grpc

from server.api.status import Status
from server.auth.identity import Caller
from server.domain.outcomes import Outcome, RuleResult
from server.observability.logs import Fields, trace_fields

log = logging.getLogger("k8sailor.requests")

_DENIED = Outcome.DENIED.value


class _HasOutcome(Protocol):
    @property
    def outcome(self) -> Outcome: ...


@dataclass(frozen=True, slots=True)
class Call:
    """One RPC as its log line names it."""

    event: str  # the RPC's name
    namespace: str
    deployment: str
    caller: Caller  # as the edge authenticated it
    started: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class Details:
    """What an RPC adds to the fields every line has, each group in its place in the line."""

    # After the caller: whether it was refused, as a whole or for some rules (CreateServices).
    denied: bool | None = None
    # After the target: what the request asked for beyond it.
    asked: Mapping[str, object] = field(default_factory=dict)
    # After the time taken: what became of the request.
    became: Mapping[str, object] = field(default_factory=dict)


def log_request(call: Call, status: Status, peer: str, details: Details) -> None:
    """The call's line: who asked what of which Deployment, how it ended, and how long it took."""
    line: dict[str, object] = {
        "event": call.event,
        "user": call.caller.user,
        "groups": list(call.caller.groups),
        "authn": call.caller.method.value,
    }
    if details.denied is not None:
        line["denied"] = details.denied
    line.update(
        {
            "namespace": call.namespace,
            "deployment": call.deployment,
            **details.asked,
            "status": status.code.name,
            "message": status.message,
            "ms": round((time.monotonic() - call.started) * 1000, 1),
            **details.became,
            "peer": peer,
            **trace_fields(),
        }
    )
    log.info(Fields(line))


def outcomes(results: Iterable[_HasOutcome]) -> dict[str, int]:
    """How many results had each outcome, by the outcome's name."""
    counts: dict[str, int] = {}
    for result in results:
        counts[result.outcome.value] = counts.get(result.outcome.value, 0) + 1
    return counts


def create_details(
    rules: int, dry_run: bool, status: Status, results: Sequence[RuleResult]
) -> Details:
    """What a CreateServices line adds: the request's size and each rule's fate."""
    counts = outcomes(results)
    return Details(
        # Denied as a whole (PERMISSION_DENIED) or for some rules (DENIED results).
        denied=status.code is grpc.StatusCode.PERMISSION_DENIED or _DENIED in counts,
        asked={"rules": rules, "dry_run": dry_run},
        became={
            "outcomes": counts,
            "results": [_result_fields(result) for result in sorted(results, key=_index)],
        },
    )


def _index(result: RuleResult) -> int:
    return result.index


def _result_fields(result: RuleResult) -> dict[str, object]:
    fields: dict[str, object] = {
        "index": result.index,
        "outcome": result.outcome.value,
        "service": result.service_name,
    }
    if result.reason:
        fields["reason"] = result.reason
    return fields
