"""The syntax of text rules: their tokens, where each token lies, and syntax errors.

The port regex reads a port's tokens loosely (anything but whitespace and the characters that
structure a rule); :mod:`.grammar` then checks each token for what it means. What lives here is
what both the parser and the error paths need to know about positions: the column of the token
behind a field (:func:`locate`, for problems found after parsing, such as a named target port
the Deployment does not have), and the sentence for text that no port regex could read.
"""

from __future__ import annotations

import re
from typing import Final

from server.rules.model import PREFIX_TYPE, TRANSPORTS, RuleError, quoted

# A token is anything but whitespace and the characters that structure a rule. Tokens are
# read loosely and then checked one by one, so that errors can say what is wrong with them.
_TOKEN: Final = r"[^\s:/,()=#!^@]++"
_PORT_SPEC: Final = (
    rf"\s*+({_TOKEN})(?:\s*+:\s*+({_TOKEN}))?(?:\s*+:\s*+({_TOKEN}))?"
    rf"(?:\s*+/\s*+({_TOKEN})(?:\s*+/\s*+({_TOKEN}))?(?:\s*+/\s*+({_TOKEN}))?)?"
    rf"(?:\s*+\(\s*+({_TOKEN})\s*+\))?"
)
#: One port and what ends it. Groups: 1-3 the ':'-separated numbers/names, 4-6 the
#: '/'-separated protocol parts, 7 the port name, 8 the ',' that ends the port (or '' at the
#: end of the rule).
PORT_RE: Final = re.compile(_PORT_SPEC + r"\s*+(,|\Z)")
_PORT_PREFIX_RE: Final = re.compile(_PORT_SPEC)
_WS_RE: Final = re.compile(r"\s*+")


def skip_ws(text: str, pos: int) -> int:
    """The first non-whitespace position at or after pos."""
    m = _WS_RE.match(text, pos)
    return m.end() if m is not None else pos


#: One token, as PORT_RE reads them.
TOKEN_RE: Final = re.compile(_TOKEN)
#: The characters that structure a rule, which no token holds.
STRUCTURE_CHARS: Final = frozenset(":/,()=#!^@")


def text_error(index: int, text: str, offset: int, message: str) -> RuleError:
    return RuleError(index, text, f"column {offset + 1}", offset + 1, message)


def field_offset(m: re.Match[str], field: str) -> int:
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
        group = 5 if first is not None and first.lower() in TRANSPORTS else 4
    elif field == "name":
        group = 7
    start = m.start(group)
    return start if start >= 0 else m.start(1)


def syntax_error(text: str, pos: int, index: int) -> RuleError:
    """Explain why no port could be read at ``pos``: find the first character that does not
    fit and say what was expected there instead."""
    n = len(text)
    m = _PORT_PREFIX_RE.match(text, pos)
    stop = skip_ws(text, m.end() if m is not None else pos)
    if stop >= n:
        # Only reachable with nothing at all where a port should be.
        before = text.rstrip()
        last = len(before) - 1
        return text_error(
            index, text, max(last, 0), f"nothing follows '{before[-1:]}'; expected a port"
        )
    ch = text[stop]
    if m is None and ch in ":/(":
        return text_error(index, text, stop, f"expected a port number before '{ch}'")
    after = skip_ws(text, stop + 1)
    next_is_token = after < n and text[after] not in STRUCTURE_CHARS and not text[after].isspace()
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
    elif ch in PREFIX_TYPE:
        message = (
            f"unexpected '{ch}'; the type prefix goes once at the start of the rule "
            "and applies to all its ports"
        )
    else:
        # Two tokens with only whitespace between them.
        token = TOKEN_RE.match(text, stop)
        word = token[0] if token is not None else ch
        if word.isdigit():
            message = f"unexpected {quoted(word)}; separate ports with ','"
        elif word.lower() in TRANSPORTS:
            message = f"unexpected {quoted(word)}; write the protocol after '/', as in 53/{word}"
        else:
            message = f"unexpected {quoted(word)}"
    return text_error(index, text, stop, message)


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
    pos = skip_ws(text, pos)
    if pos < n and text[pos] in PREFIX_TYPE:
        if text[pos] == "@":
            pos = skip_ws(text, pos + 1)
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
        m = PORT_RE.match(text, pos)
        if m is None:
            return None
        if i == wanted_index:
            return field_offset(m, port_field) + 1
        if not m[8]:
            return None
        pos = m.end()
    return None
