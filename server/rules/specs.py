"""Structured specs: :func:`check_rule` validates a rule that was built, not parsed.

A rule that arrives as structured fields (from protobuf messages, or from other Python code)
gets exactly the checks of a text rule, from :mod:`.names` and :mod:`.ports`, plus checks of
the Python types a text parser never sees. Errors carry field paths (``ports[1].node_port``)
instead of columns, and the rule's canonical text instead of what the caller wrote.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from server.rules.grammar import parse_rule
from server.rules.model import (
    DEFAULT_NODE_PORTS,
    MAX_PORTS,
    MAX_RULE_LENGTH,
    TYPE_WORDS,
    NodePortRange,
    PortRule,
    Protocol,
    RuleError,
    ServiceRule,
    ServiceType,
    quoted,
)
from server.rules.names import (
    dns1035_label_problem,
    external_name_problem,
    normalize_app_protocol,
)
from server.rules.ports import FieldProblem, PortSet, port_names_problem, port_problem
from server.rules.targets import (
    DEFAULT_EXTERNAL_NAMES,
    ExternalNamePolicy,
    external_target_problem,
)


def check_rule(
    rule: ServiceRule,
    index: int,
    node_ports: NodePortRange = DEFAULT_NODE_PORTS,
    external_names: ExternalNamePolicy = DEFAULT_EXTERNAL_NAMES,
) -> ServiceRule:
    """Validate a rule built from a structured spec, with the same checks as text rules.

    Errors carry field paths (``ports[1].node_port``) and the rule's canonical text. Returns
    the rule normalised (unprefixed app protocols in lowercase, ``h2c``/``ws``/``wss`` as
    ``kubernetes.io/...``), so that its canonical text parses back to it.
    """

    def fail(where: str, message: str) -> RuleError:
        return RuleError(index, _safe_canonical(rule), where, None, message)

    rtype = rule.type
    if not isinstance(rtype, ServiceType):
        raise fail("type", f"unknown Service type {quoted(str(rtype))}")
    if rule.name is not None:
        if not isinstance(rule.name, str):
            raise fail("name", "the Service name must be a string")
        problem = dns1035_label_problem(rule.name)
        if problem is not None:
            raise fail(
                "name",
                f"Service name {quoted(rule.name)} is not a valid DNS-1035 label: it {problem}",
            )
    if rtype is ServiceType.EXTERNAL_NAME:
        if rule.ports:
            raise fail("ports", "an ExternalName rule has no ports; it only names a host")
        if not rule.external_name:
            raise fail("external_name", "an ExternalName rule needs a host name")
        if not isinstance(rule.external_name, str):
            raise fail("external_name", "the external name must be a string")
        problem = external_target_problem(
            rule.external_name, external_names
        ) or external_name_problem(rule.external_name)
        if problem is not None:
            raise fail("external_name", problem)
        return rule
    if rule.external_name is not None:
        raise fail(
            "external_name", f"only an ExternalName rule has a host name, not {TYPE_WORDS[rtype]}"
        )
    if not rule.ports:
        raise fail("ports", f"{TYPE_WORDS[rtype]} needs at least one port")
    if len(rule.ports) > MAX_PORTS:
        raise fail(
            f"ports[{MAX_PORTS}]",
            f"the rule has {len(rule.ports)} ports; a rule may have at most {MAX_PORTS} ports: "
            "split it into several rules",
        )

    ports: list[PortRule] = []
    changed = False
    seen = PortSet()
    for i, p in enumerate(rule.ports):
        type_problem = _port_type_problem(p)
        if type_problem is not None:
            raise fail(f"ports[{i}].{type_problem[0]}", type_problem[1])
        if p.app_protocol is not None:
            app = normalize_app_protocol(p.app_protocol)
            if app != p.app_protocol:
                p = replace(p, app_protocol=app)
                changed = True
        found = port_problem(rtype, p, node_ports) or seen.add(p)
        if found is not None:
            raise fail(f"ports[{i}].{found[0]}", found[1])
        ports.append(p)
    checked = replace(rule, ports=tuple(ports)) if changed else rule
    if seen.by_name:
        clash = port_names_problem(checked)
        if clash is not None:
            raise fail(f"ports[{clash[0]}].{clash[1][0]}", clash[1][1])
    return checked


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _port_type_problem(p: Any) -> FieldProblem | None:
    """Wrong Python types in a spec built by other code: reported, never a TypeError."""
    if not isinstance(p, PortRule):
        return ("port", "each port must be a PortRule")
    if not _is_int(p.port):
        return ("port", f"port {quoted(str(p.port))} is not a number")
    if not (_is_int(p.target_port) or isinstance(p.target_port, str)):
        return ("target_port", "the target port must be a number or a name")
    if not isinstance(p.protocol, Protocol):
        return ("protocol", f"unknown protocol {quoted(str(p.protocol))}; use TCP, UDP or SCTP")
    if p.node_port is not None and not _is_int(p.node_port):
        return ("node_port", f"node port {quoted(str(p.node_port))} is not a number")
    if p.app_protocol is not None and not isinstance(p.app_protocol, str):
        return ("app_protocol", "the app protocol must be a string")
    if p.name is not None and not isinstance(p.name, str):
        return ("name", "the port name must be a string")
    return None


def _safe_canonical(rule: ServiceRule) -> str:
    """The rule's text for an error, bounded: errors quote it back to the caller."""
    try:
        if len(rule.ports) > MAX_PORTS:
            return f"<a rule of {len(rule.ports)} ports>"
        text = rule.canonical()
    except Exception:  # a spec so malformed it cannot even be shown; say so instead
        return "<unprintable rule>"
    return text if len(text) <= MAX_RULE_LENGTH else text[:64] + "…"


def parse_any(
    rule: str | ServiceRule | RuleError,
    index: int,
    node_ports: NodePortRange,
    external_names: ExternalNamePolicy = DEFAULT_EXTERNAL_NAMES,
) -> ServiceRule | RuleError:
    """Any way a rule arrives, parsed or checked: text through parse_rule, a structured rule
    through check_rule, and a RuleError (a spec that could not even become a rule) as it is.
    Returns the RuleError instead of raising it, so one bad rule never stops the others."""
    try:
        if isinstance(rule, str):
            return parse_rule(rule, index, node_ports, external_names)
        if isinstance(rule, ServiceRule):
            return check_rule(rule, index, node_ports, external_names)
    except RuleError as error:
        return error
    return rule
