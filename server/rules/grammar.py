"""The grammar of text rules, read in full: the general parser, its errors, and locate.

The general parser reads every spelling the grammar allows (whitespace between tokens,
leading zeros and port names in parentheses included) and is the reference for what a text
rule means: :func:`~server.rules.text.parse_rule` hands it everything its fast path is
unsure of, including every invalid rule, and the tests check that both agree. Its tokens are
read loosely and then checked one by one (with :mod:`.names` and :mod:`.ports`), so that a
:class:`~server.rules.model.RuleError` can point at the column of the token at fault and say
what is wrong with it in a sentence.

:func:`locate` uses the same port regex to find the token behind a field path after the fact.
"""

from __future__ import annotations

import re
from typing import Final

from server.rules.model import (
    _CLUSTER_IP,
    _EXTERNAL_NAME,
    _PREFIX_TYPE,
    _TCP,
    _TRANSPORTS,
    NodePortRange,
    PortRule,
    RuleError,
    ServiceRule,
    _near_transport,
    _show,
)
from server.rules.names import (
    _external_name_problem,
    _normalize_app_protocol,
    dns1035_label_problem,
)
from server.rules.ports import _port_names_problem, _port_problem, _PortSet, _Problem
from server.rules.targets import (
    DEFAULT_EXTERNAL_NAMES,
    ExternalNamePolicy,
    external_target_problem,
)

# A token is anything but whitespace and the characters that structure a rule. Tokens are
# read loosely and then checked one by one, so that errors can say what is wrong with them.
_TOKEN: Final = r"[^\s:/,()=#!^@]++"
_PORT_SPEC: Final = (
    rf"\s*+({_TOKEN})(?:\s*+:\s*+({_TOKEN}))?(?:\s*+:\s*+({_TOKEN}))?"
    rf"(?:\s*+/\s*+({_TOKEN})(?:\s*+/\s*+({_TOKEN}))?(?:\s*+/\s*+({_TOKEN}))?)?"
    rf"(?:\s*+\(\s*+({_TOKEN})\s*+\))?"
)
# Groups: 1-3 the ':'-separated numbers/names, 4-6 the '/'-separated protocol parts,
# 7 the port name, 8 the ',' that ends the port (or '' at the end of the rule).
_PORT_RE: Final = re.compile(_PORT_SPEC + r"\s*+(,|\Z)")
_PORT_PREFIX_RE: Final = re.compile(_PORT_SPEC)
_WS_RE: Final = re.compile(r"\s*+")


def _skip_ws(text: str, pos: int) -> int:
    """The first non-whitespace position at or after pos."""
    m = _WS_RE.match(text, pos)
    return m.end() if m is not None else pos


_TOKEN_RE: Final = re.compile(_TOKEN)
_STRUCTURE: Final = frozenset(":/,()=#!^@")


def _text_error(index: int, text: str, offset: int, message: str) -> RuleError:
    return RuleError(index, text, f"column {offset + 1}", offset + 1, message)


def _field_offset(m: re.Match[str], field: str) -> int:
    """Offset in the rule text of the token that holds ``field`` of the port matched by m."""
    three = m.start(3) >= 0
    group = 1
    if field == "port":
        group = 2 if three else 1
    elif field == "target_port":
        group = 3 if three else (2 if m.start(2) >= 0 else 1)
    elif field == "protocol":
        group = 4
    elif field == "app_protocol":
        first = m[4]
        group = 5 if first is not None and first.lower() in _TRANSPORTS else 4
    elif field == "name":
        group = 7
    start = m.start(group)
    return start if start >= 0 else m.start(1)


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
# The general parser.


def _parse_general(
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
    pos = _skip_ws(text, pos)
    if pos == n:
        if name is None:
            raise _text_error(index, text, 0, "the rule is empty")
        raise _text_error(index, text, eq, "nothing follows '='; expected ports or '@host'")
    rtype = _PREFIX_TYPE.get(text[pos])
    if rtype is None:
        rtype = _CLUSTER_IP
    else:
        prefix_at = pos
        pos = _skip_ws(text, pos + 1)
        if pos < n and text[pos] in _PREFIX_TYPE:
            raise _text_error(
                index,
                text,
                pos,
                f"two type prefixes '{text[prefix_at]}' and '{text[pos]}'; "
                "a rule has one type, so at most one prefix",
            )
        if rtype is _EXTERNAL_NAME:
            return _parse_external_name(text, pos, prefix_at, index, name, external_names)
        if pos == n:
            raise _text_error(
                index, text, prefix_at, f"nothing follows '{text[prefix_at]}'; expected a port"
            )

    ports: list[PortRule] = []
    matches: list[re.Match[str]] = []
    seen: _PortSet | None = None
    match = _PORT_RE.match
    while True:
        m = match(text, pos)
        if m is None:
            raise _syntax_error(text, pos, index)
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
                raise _text_error(
                    index, text, m.start(1), f"node port {_show(node_token)} is not a number"
                )
        port = _number(port_token)
        if port is None:
            raise _text_error(
                index,
                text,
                m.start(2 if c is not None else 1),
                f"port {_show(port_token)} is not a number; "
                "only the target port (after ':') may be a name",
            )
        target: int | str | None = _number(target_token)
        if target is None:
            target = target_token

        protocol = _TCP
        app: str | None = None
        if proto is not None:
            transport = _TRANSPORTS.get(proto.lower())
            if transport is not None:
                protocol = transport
                if app2 is not None:
                    app = app2 if app3 is None else f"{app2}/{app3}"
            else:
                if app3 is not None:
                    raise _text_error(
                        index,
                        text,
                        m.start(6) - 1,
                        "too many '/'; write [/TRANSPORT][/APP-PROTOCOL], "
                        "as in 53/udp or 80/grpc or 80/tcp/example.com/proto",
                    )
                app = proto if app2 is None else f"{proto}/{app2}"
                near = _near_transport(proto.lower())
                if near is not None:
                    raise _text_error(
                        index,
                        text,
                        m.start(4),
                        f"unknown protocol {_show(proto)}; did you mean {near}? (to use it as "
                        f"an app protocol on TCP, write tcp/{app})",
                    )
            if app is not None:
                app = _normalize_app_protocol(app)

        p = PortRule(port, target, protocol, node, app, port_name)
        problem = _port_problem(rtype, p, node_ports)
        if problem is None and (ports or end):
            # A second port is coming or already here: track clashes from the first one on.
            if seen is None:
                seen = _PortSet()
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
        clash = _port_names_problem(rule)
        if clash is not None:
            raise _token_error(index, text, matches[clash[0]], clash[1])
    return rule


def _token_error(index: int, text: str, m: re.Match[str], problem: _Problem) -> RuleError:
    field, message = problem
    offset = _field_offset(m, field)
    huge = str(_HUGE)
    if huge in message:
        # Show the number as written: for 99999999999 the model only holds a stand-in.
        token = _TOKEN_RE.match(text, offset)
        if token is not None:
            written = token[0] if len(token[0]) <= 40 else token[0][:40] + "…"
            message = message.replace(huge, written)
    return _text_error(index, text, offset, message)


def _parse_name(text: str, eq: int, index: int) -> str:
    """The explicit Service name before '=' (``admin=!80:9090``)."""
    raw = text[:eq]
    name = raw.strip()
    start = len(raw) - len(raw.lstrip())
    if not name:
        raise _text_error(
            index, text, eq, "nothing before '='; a Service name goes there, as in web=80:8080"
        )
    if any(ch in _STRUCTURE for ch in name):
        raise _text_error(
            index,
            text,
            eq,
            "unexpected '='; an explicit Service name goes first, as in web=!80:8080",
        )
    problem = dns1035_label_problem(name)
    if problem is not None:
        raise _text_error(
            index,
            text,
            start,
            f"Service name {_show(name)} is not a valid DNS-1035 label: it {problem}",
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
        raise _text_error(
            index,
            text,
            prefix_at,
            "nothing follows '@'; expected a host name such as db.example.com",
        )
    # Before the syntax: "[::1]" is an address rather than a host with a port, and LOCALHOST
    # a loopback name rather than one in the wrong case.
    refused = external_target_problem(host, policy)
    if refused is not None:
        raise _text_error(index, text, pos, refused)
    bad = _HOST_STRUCTURE_RE.search(host)
    if bad is not None:
        ch = bad[0]
        what = "a port" if ch == ":" else ("ports" if ch == "," else _show(ch))
        raise _text_error(
            index,
            text,
            pos + bad.start(),
            f"an ExternalName rule takes a host name only, not {what}",
        )
    problem = _external_name_problem(host)
    if problem is not None:
        raise _text_error(index, text, pos, problem)
    return ServiceRule(_EXTERNAL_NAME, (), name, host)


def _syntax_error(text: str, pos: int, index: int) -> RuleError:
    """Explain why no port could be read at ``pos``: find the first character that does not
    fit and say what was expected there instead."""
    n = len(text)
    m = _PORT_PREFIX_RE.match(text, pos)
    stop = _skip_ws(text, m.end() if m is not None else pos)
    if stop >= n:
        # Only reachable with nothing at all where a port should be.
        before = text.rstrip()
        last = len(before) - 1
        return _text_error(
            index, text, max(last, 0), f"nothing follows '{before[-1:]}'; expected a port"
        )
    ch = text[stop]
    if m is None and ch in ":/(":
        return _text_error(index, text, stop, f"expected a port number before '{ch}'")
    after = _skip_ws(text, stop + 1)
    next_is_token = after < n and text[after] not in _STRUCTURE and not text[after].isspace()
    if ch == ":":
        if m is not None and next_is_token:
            message = "too many ':'; a port is [NODE_PORT:]PORT[:TARGET]"
        else:
            message = "expected a port number or name after ':'"
    elif ch == "/":
        if m is not None and m.start(4) >= 0 and next_is_token:
            message = "too many '/'; write [/TRANSPORT][/APP-PROTOCOL], as in 53/udp or 80/grpc"
        else:
            message = "expected a protocol after '/', such as udp or grpc"
    elif ch == "(":
        if m is not None and m.start(7) >= 0:
            message = "a port has one name, in one pair of parentheses"
        else:
            message = "expected a port name and ')' after '('"
    elif ch == ")":
        message = "unexpected ')' without a '(' before it"
    elif ch == ",":
        message = "expected a port before ','"
    elif ch == "=":
        message = "unexpected '='; an explicit Service name goes first, as in web=!80:8080"
    elif ch in _PREFIX_TYPE:
        message = (
            f"unexpected '{ch}'; the type prefix goes once at the start of the rule "
            "and applies to all its ports"
        )
    else:
        # Two tokens with only whitespace between them.
        token = _TOKEN_RE.match(text, stop)
        word = token[0] if token is not None else ch
        if word.isdigit():
            message = f"unexpected {_show(word)}; separate ports with ','"
        elif word.lower() in _TRANSPORTS:
            message = f"unexpected {_show(word)}; write the protocol after '/', as in 53/{word}"
        else:
            message = f"unexpected {_show(word)}"
    return _text_error(index, text, stop, message)


def locate(text: str, field: str) -> int | None:
    """The 1-based column in a text rule of the token behind a field path.

    Paths are those of errors about structured specs: ``"name"``, ``"external_name"``,
    ``"ports[2].target_port"``. Used to point at a token when a problem is only found later
    (a named target port the Deployment does not have). None if there is no such token.
    """
    n = len(text)
    pos = 0
    eq = text.find("=")
    if eq >= 0:
        if field == "name":
            raw = text[:eq]
            return len(raw) - len(raw.lstrip()) + 1
        pos = eq + 1
    elif field == "name":
        return None
    pos = _skip_ws(text, pos)
    if pos < n and text[pos] in _PREFIX_TYPE:
        if text[pos] == "@":
            pos = _skip_ws(text, pos + 1)
            return pos + 1 if field == "external_name" and pos < n else None
        pos += 1
    wanted, dot, port_field = field.partition("].")
    if not dot or not wanted.startswith("ports["):
        return None
    try:
        wanted_index = int(wanted[6:])
    except ValueError:
        return None
    for i in range(wanted_index + 1):
        m = _PORT_RE.match(text, pos)
        if m is None:
            return None
        if i == wanted_index:
            return _field_offset(m, port_field) + 1
        if not m[8]:
            return None
        pos = m.end()
    return None
