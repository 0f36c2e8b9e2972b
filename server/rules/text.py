"""Text rules: :func:`parse_rule`, with a fast path for the common spellings.

Most rules callers send are short and already canonical (``80:8080``, ``!31234:80:8080``,
``web=#80``, ``@db.example.com``), and the parse + build target (50k rules/s on one core)
calls for reading those with a few anchored regexes and building the model directly. Whatever
the fast path is unsure of, including every invalid rule, goes to the general parser in
:mod:`.grammar`, which is the reference: the tests check that both give the same result.
"""

from __future__ import annotations

import re
from typing import Any, Final

from server.rules.grammar import _parse_general
from server.rules.model import (
    _CLUSTER_IP,
    _EXTERNAL_NAME,
    _K8S_APP_PROTOCOLS,
    _LOAD_BALANCER,
    _NEAR_TRANSPORTS,
    _NODE_PORT,
    _PREFIX_TYPE,
    _TCP,
    _TRANSPORTS,
    DEFAULT_NODE_PORTS,
    MAX_PORTS,
    MAX_RULE_LENGTH,
    NodePortRange,
    PortRule,
    Protocol,
    RuleError,
    ServiceRule,
    ServiceType,
    _noting_canonical,
)
from server.rules.names import _DNS1123_SUBDOMAIN_RE, _IANA_RE
from server.rules.targets import (
    DEFAULT_EXTERNAL_NAMES,
    ExternalNamePolicy,
    external_target_problem,
)

# The common shapes, written without spaces: [name=][#!^]PORT[:TARGET][/proto[/app]] and
# [name=][!^]NODE:PORT:TARGET[...], numbers without leading zeros. Tokens are matched loosely
# and checked in code (cheaper than exact regexes). Whatever the fast path is unsure of,
# including every invalid rule, goes to the general path, which is the reference: the tests
# check that both give the same result.
_FAST_NAME: Final = r"(?:([a-z][-a-z0-9]{0,62})=)?"
_FAST_PORT: Final = (
    r"([1-9][0-9]{0,4}+)(?::([-a-z0-9]{1,15}+))?(?::([-a-z0-9]{1,15}+))?"
    r"(?:/([a-z][-a-z0-9]{0,14}+)(?:/([a-z][-a-z0-9]{0,14}+))?)?"
)
_FAST_RE: Final = re.compile(_FAST_NAME + r"([#!^]?)" + _FAST_PORT)
# Several ports: the head, then each port in turn (re cannot capture repeated groups).
_FAST_MULTI_RE: Final = re.compile(_FAST_NAME + r"([#!^]?)(?=[^,]++(?:,[^,]++)++\Z)")
_FAST_PORT_RE: Final = re.compile(_FAST_PORT + r"(?:,|\Z)")
_FAST_EXTERNAL_RE: Final = re.compile(_FAST_NAME + r"@([a-z0-9][-a-z0-9.]{0,252})")
_FAST_TYPE: Final[dict[str, ServiceType]] = {"": _CLUSTER_IP, **_PREFIX_TYPE}


def parse_rule(
    text: str,
    index: int,
    node_ports: NodePortRange = DEFAULT_NODE_PORTS,
    external_names: ExternalNamePolicy = DEFAULT_EXTERNAL_NAMES,
) -> ServiceRule:
    """Parse one text rule into a validated :class:`ServiceRule`, or raise :class:`RuleError`.

    ``index`` is the rule's position in the request; it only appears in errors.
    ``node_ports`` and ``external_names`` are what the server knows of the cluster and what
    its operator allows (the defaults: Kubernetes' own, nothing extra).
    """
    if len(text) > _SHORT:
        _check_size(text, index)
    m = _FAST_RE.fullmatch(text)
    if m is not None:
        name, prefix, first, second, third, proto, app = m.groups()
        if name is None or name[-1] != "-":
            rtype = _FAST_TYPE[prefix]
            p = _fast_port(first, second, third, proto, app, rtype, node_ports)
            if p is not None:
                # The text is canonical unless it spelled out /tcp or wrote 80:80 for 80.
                canonical = proto != "tcp" and (
                    second is None or third is not None or p.target_port != p.port
                )
                one = ServiceRule(rtype, (p,), name)
                return _noting_canonical(one, text if canonical else None)
    elif "," in text:
        several = _parse_fast_multi(text, node_ports)
        if several is not None:
            return several
    elif "@" in text:
        m = _FAST_EXTERNAL_RE.fullmatch(text)
        if (
            m is not None
            and _DNS1123_SUBDOMAIN_RE.fullmatch(m[2])
            and external_target_problem(m[2], external_names) is None
        ):
            name = m[1]
            if name is None or name[-1] != "-":
                return _noting_canonical(ServiceRule(_EXTERNAL_NAME, (), name, m[2]), text)
    return _parse_general(text, index, node_ports, external_names)


# Below this length a rule can break neither limit: MAX_PORTS ports take two characters each.
_SHORT: Final = min(MAX_RULE_LENGTH, 2 * MAX_PORTS - 1)
# How much of a refused over-long rule its result quotes back.
_EXCERPT: Final = 64


def _check_size(text: str, index: int) -> None:
    """Refuse, before reading it, a rule beyond MAX_RULE_LENGTH characters or MAX_PORTS
    ports: bounds what a hostile rule costs, however linear the parser is."""
    if len(text) > MAX_RULE_LENGTH:
        column = MAX_RULE_LENGTH + 1
        raise RuleError(
            index,
            text[:_EXCERPT] + "…",
            f"column {column}",
            column,
            f"the rule is {len(text)} characters long; a rule may be at most "
            f"{MAX_RULE_LENGTH} characters: split it into several rules",
        )
    commas = text.count(",")
    if commas >= MAX_PORTS:
        pos = -1
        for _ in range(MAX_PORTS):
            pos = text.find(",", pos + 1)
        column = pos + 2  # the first port beyond the limit, 1-based
        raise RuleError(
            index,
            text,
            f"column {column}",
            column,
            f"the rule has {commas + 1} ports; a rule may have at most {MAX_PORTS} ports: "
            "split it into several rules",
        )


def _fast_port(
    first: str,
    second: Any,
    third: str | None,
    proto: str | None,
    app: str | None,
    rtype: ServiceType,
    node_ports: NodePortRange,
) -> PortRule | None:
    """The port matched by _FAST_PORT (its five groups first); or None if it needs the
    general path's judgement (which then refuses it, or accepts an unusual spelling)."""
    node: int | None = None
    if third is None:
        port = int(first)
        target_token = second
    else:
        # NODE:PORT:TARGET
        if not (rtype is _NODE_PORT or rtype is _LOAD_BALANCER):
            return None
        node = int(first)
        if not node_ports.low <= node <= node_ports.high:
            return None
        if not second.isdigit() or second[0] == "0" or len(second) > 5:
            return None
        port = int(second)
        target_token = third
    if port > 65535:
        return None
    target: int | str = port
    if target_token is not None:
        if target_token.isdigit():
            if target_token[0] == "0" or len(target_token) > 5:
                return None
            target = int(target_token)
            if target > 65535:
                return None
        elif _IANA_RE.fullmatch(target_token) is None:
            return None
        else:
            target = target_token
    protocol = _TCP
    if proto is not None:
        transport = _TRANSPORTS.get(proto)
        if transport is None:
            # An app protocol on TCP; a second part would be a typo or a prefix: general path.
            if app is not None:
                return None
            app = proto
        else:
            protocol = transport
        if app is not None:
            if app[-1] == "-" or app in _NEAR_TRANSPORTS or app in _TRANSPORTS:
                return None
            app = _K8S_APP_PROTOCOLS.get(app, app)
    return PortRule(port, target, protocol, node, app)


def _parse_fast_multi(text: str, node_ports: NodePortRange) -> ServiceRule | None:
    """Several simple ports, or None for the general path to take over."""
    head = _FAST_MULTI_RE.match(text)
    if head is None:
        return None
    name = head[1]
    if name is not None and name[-1] == "-":
        return None
    rtype = _FAST_TYPE[head[2]]
    ports: list[PortRule] = []
    # What earlier ports use, for clashes (see _PortSet) in constant time per port: comparing
    # each port with all earlier ones made a rule with many ports quadratic.
    keys: set[tuple[int, Protocol]] = set()
    node_of: dict[int, int] = {}
    canonical = True
    pos = head.end()
    n = len(text)
    match = _FAST_PORT_RE.match
    while pos < n:
        m = match(text, pos)
        if m is None:
            return None
        first, second, third, proto, app = m.groups()
        p = _fast_port(first, second, third, proto, app, rtype, node_ports)
        if p is None:
            return None
        key = (p.port, p.protocol)
        node = p.node_port
        # Clashes are left to the general path to explain.
        if key in keys or (node is not None and node_of.setdefault(node, p.port) != p.port):
            return None
        keys.add(key)
        if proto == "tcp" or (third is None and second is not None and p.target_port == p.port):
            canonical = False
        ports.append(p)
        pos = m.end()
    rule = ServiceRule(rtype, tuple(ports), name)
    return _noting_canonical(rule, text if canonical else None)
