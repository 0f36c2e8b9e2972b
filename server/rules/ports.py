"""Port checks shared by text rules and structured specs, and the Service port names.

:func:`port_problem` checks one port on its own against its rule's type and the node port
range; :class:`PortSet` finds clashes between the ports of one rule as each is added;
:func:`port_names` derives the Service port names (kubectl's convention) and
:func:`port_names_problem` finds a derived name that clashes with an explicit one.

Each check returns ``(field, message)`` for the first problem, fields named as in
:class:`~server.rules.model.PortRule`, so that specs get ``ports[i].<field>`` paths and text
rules get the column of the token that holds that field.
"""

from __future__ import annotations

from collections import Counter

from server.rules.model import (
    TYPE_WORDS,
    NodePortRange,
    PortRule,
    Protocol,
    ServiceRule,
    ServiceType,
    quoted,
)
from server.rules.names import (
    app_protocol_problem,
    dns1123_label_problem,
    iana_service_name_problem,
)

FieldProblem = tuple[str, str]


def port_problem(rtype: ServiceType, p: PortRule, node_ports: NodePortRange) -> FieldProblem | None:
    """Problems of one port on its own, in the order its fields appear in text."""
    node = p.node_port
    if node is not None:
        if rtype is not ServiceType.NODE_PORT and rtype is not ServiceType.LOAD_BALANCER:
            return (
                "node_port",
                f"node port {node} is not allowed on {TYPE_WORDS[rtype]}; "
                "only NodePort (!) and LoadBalancer (^) rules have node ports",
            )
        if not node_ports.low <= node <= node_ports.high:
            return ("node_port", f"node port {node} is outside {node_ports}")
    if not 1 <= p.port <= 65535:
        return ("port", f"port {p.port} is outside 1-65535")
    target = p.target_port
    if isinstance(target, int):
        if not 1 <= target <= 65535:
            return ("target_port", f"target port {target} is outside 1-65535")
    else:
        problem = iana_service_name_problem(target)
        if problem is not None:
            return (
                "target_port",
                f"target port name {quoted(target)} is not a valid IANA service name: it {problem}",
            )
    app = p.app_protocol
    if app is not None:
        problem = app_protocol_problem(app)
        if problem is not None:
            return ("app_protocol", f"app protocol {quoted(app)} is not valid: it {problem}")
    if p.name is not None:
        problem = dns1123_label_problem(p.name)
        if problem is not None:
            return (
                "name",
                f"port name {quoted(p.name)} is not a valid DNS-1123 label: it {problem}",
            )
    return None


class PortSet:
    """What the earlier ports of one rule use, to find clashes as each port is added."""

    __slots__ = ("by_key", "by_name", "by_node")

    def __init__(self) -> None:
        self.by_key: dict[tuple[int, Protocol], int] = {}
        self.by_node: dict[int, PortRule] = {}
        self.by_name: dict[str, int] = {}

    def add(self, p: PortRule) -> FieldProblem | None:
        key = (p.port, p.protocol)
        if key in self.by_key:
            return ("port", f"port {p.port}/{p.protocol} appears twice in this rule")
        node = p.node_port
        if node is not None:
            other = self.by_node.get(node)
            # The apiserver lets one node port serve the same port number over two protocols
            # (53/TCP and 53/UDP), but refuses it for two different ports.
            if other is not None and other.port != p.port:
                return (
                    "node_port",
                    f"node port {node} is already used by port {other.port} of this rule",
                )
            self.by_node[node] = p
        if p.name is not None:
            if p.name in self.by_name:
                return ("name", f"port name {quoted(p.name)} appears twice in this rule")
            self.by_name[p.name] = len(self.by_key)
        self.by_key[key] = len(self.by_key)
        return None


def port_names(rule: ServiceRule) -> tuple[str, ...]:
    """The Service port names for a rule's ports.

    An explicit name wins; otherwise kubectl's ``<port>-<target>`` (``80-8088``,
    ``443-https``), with ``-<protocol>`` appended when one port number is used with several
    protocols (``53-53-tcp``, ``53-53-udp``). These are always valid DNS-1123 labels.
    """
    ports = rule.ports
    if len(ports) == 1:
        p = ports[0]
        return (p.name if p.name is not None else f"{p.port}-{p.target_port}",)
    numbers = [p.port for p in ports]
    if len(set(numbers)) == len(numbers):
        # No port number used twice: no protocol suffixes needed.
        return tuple(p.name if p.name is not None else f"{p.port}-{p.target_port}" for p in ports)
    # Counted in one pass: list.count() per port made a rule with many ports quadratic.
    shared = {n for n, times in Counter(numbers).items() if times > 1}
    return tuple(
        p.name
        if p.name is not None
        else f"{p.port}-{p.target_port}-{str(p.protocol).lower()}"
        if p.port in shared
        else f"{p.port}-{p.target_port}"
        for p in ports
    )


def port_names_problem(rule: ServiceRule) -> tuple[int, FieldProblem] | None:
    """A derived port name that clashes with an explicit one (the only way names can clash)."""
    seen: dict[str, int] = {}
    for i, name in enumerate(port_names(rule)):
        if name in seen:
            return i, (
                "name",
                f"port name {quoted(name)} is also the name of port {seen[name] + 1} of this "
                "rule; give the ports distinct names",
            )
        seen[name] = i
    return None
