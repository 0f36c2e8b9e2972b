"""What became of each rule (or each Service a request names): the outcome names every flow
reports, one result type for a rule, and the protocol that spans and counts read them by."""

from __future__ import annotations

import enum
import typing
from dataclasses import dataclass

from server.rules import PortRule, ServiceType


class Outcome(enum.Enum):
    CREATED = "CREATED"
    UNCHANGED = "UNCHANGED"
    INVALID = "INVALID"
    CONFLICT = "CONFLICT"
    FAILED = "FAILED"
    DENIED = "DENIED"  # the caller may not do this to a Service of this rule's type here
    # What the lifecycle flows (apply, delete) report besides.
    UPDATED = "UPDATED"
    DELETED = "DELETED"
    NOT_FOUND = "NOT_FOUND"


@dataclass(frozen=True, slots=True)
class RuleResult:
    """What became of one rule; ports are as the cluster has them, node ports filled in."""

    index: int
    rule: str
    outcome: Outcome
    service_name: str = ""
    cluster_ip: str = ""
    ports: tuple[PortRule, ...] = ()
    error: str = ""
    reason: str = ""
    service_type: ServiceType | None = None  # None: refused before its type was known

    @property
    def ok(self) -> bool:
        return self.outcome in (Outcome.CREATED, Outcome.UNCHANGED)


class RuleOutcome(typing.Protocol):  # (rules has a Protocol of its own: TCP, UDP)
    """What became of a rule, or of a Service named in a request: what its span says and what
    it is counted by. server.observability counts any value of this shape (structurally: it
    does not import the domain), so only plain values are read: outcome.value is its name."""

    @property
    def outcome(self) -> Outcome: ...
    @property
    def reason(self) -> str: ...
    @property
    def service_name(self) -> str: ...
    @property
    def service_type(self) -> ServiceType | None: ...
