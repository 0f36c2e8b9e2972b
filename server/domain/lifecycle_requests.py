"""What DeleteServices and ApplyServices ask, in domain terms."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from server.domain.rights import Rights
from server.rules import RuleError, ServiceRule, ServiceType


@dataclass(frozen=True, slots=True)
class DeleteRequest:
    namespace: str
    deployment: str
    names: Sequence[str]
    all: bool = False
    dry_run: bool = False
    # What the caller may do (server.auth decided); None: authorization is off.
    grants: Rights | None = None


@dataclass(frozen=True, slots=True)
class ApplyRequest:
    namespace: str
    deployment: str
    rules: Sequence[str | ServiceRule | RuleError]
    prune: bool = False
    force: bool = False
    dry_run: bool = False
    # What the caller may do (server.auth decided); None: authorization is off.
    grants: Rights | None = None


@dataclass(frozen=True, slots=True)
class ParsedRules:
    """An ApplyRequest's rules parsed, once: what authorization decides on (types) and what
    apply builds from, so that neither parses them again."""

    rules: Sequence[ServiceRule | RuleError]
    texts: Sequence[str]  # each rule's canonical text, or as written when it did not parse

    @property
    def types(self) -> frozenset[ServiceType]:
        """The Service types the valid rules ask for."""
        return frozenset(rule.type for rule in self.rules if isinstance(rule, ServiceRule))
