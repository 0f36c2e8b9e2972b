"""The grammar of text rules: :func:`parse_rule`, the one text parser.

It reads every spelling the grammar allows (whitespace between tokens, leading zeros and port
names in parentheses included). Tokens are read loosely by the regexes of :mod:`.syntax` and
then checked one by one (with :mod:`.names` and :mod:`.ports`), so that a
:class:`~server.rules.model.RuleError` can point at the column of the token at fault and say
what is wrong with it in a sentence. A rule beyond :data:`~server.rules.model.MAX_RULE_LENGTH`
characters or :data:`~server.rules.model.MAX_PORTS` ports is refused before it is read.
"""

from __future__ import annotations

import re
from typing import Final

from server.rules.model import (
    DEFAULT_NODE_PORTS,
    MAX_PORTS,
    MAX_RULE_LENGTH,
    PREFIX_TYPE,
    TRANSPORTS,
    NodePortRange,
    PortRule,
    Protocol,
    RuleError,
    ServiceRule,
    ServiceType,
    near_transport,
    quoted,
)
from server.rules.names import (
    dns1035_label_problem,
    external_name_problem,
    normalize_app_protocol,
)
from server.rules.ports import FieldProblem, PortSet, port_names_problem, port_problem
from server.rules.syntax import (
    PORT_RE,
    STRUCTURE_CHARS,
    TOKEN_RE,
    field_offset,
    skip_ws,
    syntax_error,
    text_error,
)
from server.rules.targets import (
    DEFAULT_EXTERNAL_NAMES,
    ExternalNamePolicy,
    external_target_problem,
)


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
    _check_size(text, index)
    return _parse_unbounded(text, index, node_ports, external_names)


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


# Stands in for numbers too long to convert; out of every range, and replaced by the token
# itself in error messages (see _token_error).
_HUGE: Final = 1 << 40


def _number(token: str) -> int | None:
    """A port number token as an int; None if it is not ASCII digits.

    Python's int() accepts '+8_0' and Unicode digits, and refuses more than 4300 digits with a
    ValueError: neither may leak through, so tokens are checked first and very long numbers
    come back as _HUGE.
    """
    if token.isdigit() and token.isascii():
        if len(token) > 9 and len(token.lstrip("0")) > 9:
            return _HUGE
        return int(token)
    return None


# --------------------------------------------------------------------------------------------
# The parser proper, after the size check: every spelling the grammar allows.


def _parse_unbounded(
    text: str,
    index: int,
    node_ports: NodePortRange,
    external_names: ExternalNamePolicy = DEFAULT_EXTERNAL_NAMES,
) -> ServiceRule:
    """Any text rule the grammar allows, with or without whitespace, as a checked rule; for
    anything else a RuleError at the column of the first token that does not fit."""
    n = len(text)
    name: str | None = None
    pos = 0
    eq = text.find("=")
    if eq >= 0:
        name = _parse_name(text, eq, index)
        pos = eq + 1
    pos = skip_ws(text, pos)
    if pos == n:
        if name is None:
            raise text_error(index, text, 0, "the rule is empty")
        raise text_error(index, text, eq, "nothing follows '='; expected ports or '@host'")
    rtype = PREFIX_TYPE.get(text[pos])
    if rtype is None:
        rtype = ServiceType.CLUSTER_IP
    else:
        prefix_at = pos
        pos = skip_ws(text, pos + 1)
        if pos < n and text[pos] in PREFIX_TYPE:
            raise text_error(
                index,
                text,
                pos,
                f"two type prefixes '{text[prefix_at]}' and '{text[pos]}'; "
                "a rule has one type, so at most one prefix",
            )
        if rtype is ServiceType.EXTERNAL_NAME:
            return _parse_external_name(text, pos, prefix_at, index, name, external_names)
        if pos == n:
            raise text_error(
                index, text, prefix_at, f"nothing follows '{text[prefix_at]}'; expected a port"
            )

    ports: list[PortRule] = []
    matches: list[re.Match[str]] = []
    seen: PortSet | None = None
    match = PORT_RE.match
    while True:
        m = match(text, pos)
        if m is None:
            raise syntax_error(text, pos, index)
        a, b, c, proto, app2, app3, port_name, end = m.groups()
        if c is not None:
            node_token: str | None = a
            port_token = b
            target_token = c
        else:
            node_token = None
            port_token = a
            target_token = b if b is not None else a

        node: int | None = None
        if node_token is not None:
            node = _number(node_token)
            if node is None:
                raise text_error(
                    index, text, m.start(1), f"node port {quoted(node_token)} is not a number"
                )
        port = _number(port_token)
        if port is None:
            raise text_error(
                index,
                text,
                m.start(2 if c is not None else 1),
                f"port {quoted(port_token)} is not a number; "
                "only the target port (after ':') may be a name",
            )
        target: int | str | None = _number(target_token)
        if target is None:
            target = target_token

        protocol = Protocol.TCP
        app: str | None = None
        if proto is not None:
            transport = TRANSPORTS.get(proto.lower())
            if transport is not None:
                protocol = transport
                if app2 is not None:
                    app = app2 if app3 is None else f"{app2}/{app3}"
            else:
                if app3 is not None:
                    raise text_error(
                        index,
                        text,
                        m.start(6) - 1,
                        "too many '/'; write [/TRANSPORT][/APP-PROTOCOL], "
                        "as in 53/udp or 80/grpc or 80/tcp/example.com/proto",
                    )
                app = proto if app2 is None else f"{proto}/{app2}"
                near = near_transport(proto.lower())
                if near is not None:
                    raise text_error(
                        index,
                        text,
                        m.start(4),
                        f"unknown protocol {quoted(proto)}; did you mean {near}? (to use it as "
                        f"an app protocol on TCP, write tcp/{app})",
                    )
            if app is not None:
                app = normalize_app_protocol(app)

        p = PortRule(port, target, protocol, node, app, port_name)
        problem = port_problem(rtype, p, node_ports)
        if problem is None and (ports or end):
            # A second port is coming or already here: track clashes from the first one on.
            if seen is None:
                seen = PortSet()
            problem = seen.add(p)
        if problem is not None:
            raise _token_error(index, text, m, problem)
        ports.append(p)
        matches.append(m)
        if not end:
            break
        pos = m.end()

    rule = ServiceRule(rtype, tuple(ports), name)
    if seen is not None and seen.by_name:
        clash = port_names_problem(rule)
        if clash is not None:
            raise _token_error(index, text, matches[clash[0]], clash[1])
    return rule


def _token_error(index: int, text: str, m: re.Match[str], problem: FieldProblem) -> RuleError:
    field, message = problem
    offset = field_offset(m, field)
    huge = str(_HUGE)
    if huge in message:
        # Show the number as written: for 99999999999 the model only holds a stand-in.
        token = TOKEN_RE.match(text, offset)
        if token is not None:
            written = token[0] if len(token[0]) <= 40 else token[0][:40] + "…"
            message = message.replace(huge, written)
    return text_error(index, text, offset, message)


def _parse_name(text: str, eq: int, index: int) -> str:
    """The explicit Service name before '=' (``admin=!80:9090``)."""
    raw = text[:eq]
    name = raw.strip()
    start = len(raw) - len(raw.lstrip())
    if not name:
        raise text_error(
            index, text, eq, "nothing before '='; a Service name goes there, as in web=80:8080"
        )
    if any(ch in STRUCTURE_CHARS for ch in name):
        raise text_error(
            index,
            text,
            eq,
            "unexpected '='; an explicit Service name goes first, as in web=!80:8080",
        )
    problem = dns1035_label_problem(name)
    if problem is not None:
        raise text_error(
            index,
            text,
            start,
            f"Service name {quoted(name)} is not a valid DNS-1035 label: it {problem}",
        )
    return name


_HOST_STRUCTURE_RE: Final = re.compile(r"[:,/\s]")


def _parse_external_name(
    text: str,
    pos: int,
    prefix_at: int,
    index: int,
    name: str | None,
    policy: ExternalNamePolicy,
) -> ServiceRule:
    host = text[pos:].rstrip()
    if not host:
        raise text_error(
            index,
            text,
            prefix_at,
            "nothing follows '@'; expected a host name such as db.example.com",
        )
    # Before the syntax: "[::1]" is an address rather than a host with a port, and LOCALHOST
    # a loopback name rather than one in the wrong case.
    refused = external_target_problem(host, policy)
    if refused is not None:
        raise text_error(index, text, pos, refused)
    bad = _HOST_STRUCTURE_RE.search(host)
    if bad is not None:
        ch = bad[0]
        what = "a port" if ch == ":" else ("ports" if ch == "," else quoted(ch))
        raise text_error(
            index,
            text,
            pos + bad.start(),
            f"an ExternalName rule takes a host name only, not {what}",
        )
    problem = external_name_problem(host)
    if problem is not None:
        raise text_error(index, text, pos, problem)
    return ServiceRule(ServiceType.EXTERNAL_NAME, (), name, host)
