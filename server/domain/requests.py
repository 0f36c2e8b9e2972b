"""What every flow checks and parses of a request before any I/O: the target's names, the
number of rules, and the rules themselves (parsed once, in slices)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from server.domain.cooperative import in_slices
from server.domain.errors import BadRequest
from server.domain.settings import Settings
from server.rules import (
    RuleError,
    ServiceRule,
    ServiceType,
    dns1123_label_problem,
    dns1123_subdomain_problem,
    parse_any,
)
from server.rules.brief import BRIEF_KEEP, STRING_LIMIT, length_marker

EMPTY: Final = "no rules: send at least one rule"


def check_target(namespace: str, deployment: str) -> None:
    """Refuse a namespace or Deployment name that no object can have (BadRequest)."""
    problem = dns1123_label_problem(namespace)
    if problem is not None:
        raise BadRequest(
            f"namespace {_quoted(namespace)} is not a valid namespace name (a lowercase "
            f"DNS-1123 label): it {problem}"
        )
    if not deployment:
        raise BadRequest("deployment is required")
    problem = dns1123_subdomain_problem(deployment)
    if problem is not None:
        raise BadRequest(
            f"deployment {_quoted(deployment)} is not a valid Deployment name (a lowercase "
            f"DNS-1123 subdomain): it {problem}"
        )


def check_count(
    count: int, settings: Settings, *, noun: str = "rules", empty: str | None = EMPTY
) -> None:
    """Refuse a request of more than settings.max_rules rules (or names: noun), and with
    empty, one of none (BadRequest, empty the message). The edge (server.api.edge) refuses an
    oversized request before it is decoded: this is the same bound for callers that build a
    request themselves."""
    if count == 0 and empty is not None:
        raise BadRequest(empty)
    if count > settings.max_rules:
        raise BadRequest(
            f"{count} {noun} is more than this server accepts in one request "
            f"({settings.max_rules}); split them over several requests"
        )


async def parse_rules(
    rules: Sequence[str | ServiceRule | RuleError], settings: Settings
) -> list[ServiceRule | RuleError]:
    """Every rule parsed, in slices (server.domain.cooperative): the largest request takes a few
    hundred milliseconds of CPU, which must not keep other calls waiting."""
    node_ports, external_names = settings.node_ports, settings.external_names
    return await in_slices(
        parse_any(rule, index, node_ports, external_names) for index, rule in enumerate(rules)
    )


async def rule_texts(parsed: Iterable[ServiceRule | RuleError]) -> list[str]:
    """Each rule's canonical text, or its text as written when it did not parse."""
    return await in_slices(
        item.text if isinstance(item, RuleError) else item.canonical() for item in parsed
    )


def rule_types(parsed: Iterable[ServiceRule | RuleError]) -> frozenset[ServiceType]:
    """The Service types the valid rules ask for: what authorization decides on."""
    return frozenset(rule.type for rule in parsed if isinstance(rule, ServiceRule))


def _quoted(name: str) -> str:
    """A name for a request-level error, bounded: the status message is sent back in a
    trailer, and a hostile request may send a name of megabytes."""
    # The log lines' rule (server.rules.brief), so an error and its line agree.
    if len(name) <= STRING_LIMIT:
        return repr(name)
    return repr(name[:BRIEF_KEEP]) + length_marker(len(name))
