"""What ListServices, DeleteServices and ApplyServices answer, in domain terms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from server.domain.diff import FieldChange
from server.domain.outcomes import Outcome, RuleResult
from server.rules import PortRule, ServiceType

# A pruned Service is not one of the request's rules (nor, with all, a deleted one one of its
# names): its result and span carry this index.
PRUNED_INDEX = -1

#: The rule of a Service whose k8sailor.io/rule annotation is not a canonical rule (someone
#: patched it): fixed and short, and no rule parses as it, so it cannot be applied by mistake.
NOT_A_RULE: Final = "(not a k8sailor rule: the k8sailor.io/rule annotation was changed)"


@dataclass(frozen=True, slots=True)
class ExposedService:
    """A Service the Deployment owns, as the cluster has it, and the rule it was made from."""

    name: str
    type: ServiceType
    rule: str  # canonical; empty if the annotation was removed, NOT_A_RULE if changed
    cluster_ip: str
    ports: tuple[PortRule, ...]


@dataclass(frozen=True, slots=True)
class DeleteResult:
    service_name: str
    outcome: Outcome
    error: str = ""
    reason: str = ""
    service_type: ServiceType | None = None  # None: no such Service, or it could not be read


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What became of one rule (or, with index -1, of one pruned Service)."""

    result: RuleResult
    changes: tuple[FieldChange, ...] = ()
