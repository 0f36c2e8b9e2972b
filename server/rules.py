"""Service rules: compact text and structured specs become one validated model.

This module is pure: no I/O, no grpc, no kubernetes imports. It turns what a caller wrote
(``"80:8088"``, ``"admin=!31234:80:8088"``, ``"@db.example.com"``, or the same thing as a
structured spec) into a :class:`ServiceRule`, or refuses it with a :class:`RuleError` that names
the rule, the column (or field) and the problem in a sentence.

Validation mirrors the kube-apiserver's own checks for the fields a rule controls (regexes and
limits as in ``k8s.io/apimachinery/pkg/util/validation`` and ``ValidateService``), so that a rule
accepted here is not refused later by the apiserver, except for what only the cluster knows (a
node port already taken, a custom node port range we were not told about).

The grammar, the error list and the differences from ``kubectl create service`` and from the
earlier Go tool are documented in ``docs/rules.md``.

Speed matters here (the target is 200k rules/s for parse + build on one core), which explains
a few choices: str-valued enums (they hash and compare at C speed), possessive regexes that never
backtrack, a fast path for the common spellings (checked against the general parser by the
tests), and private builders for the frozen dataclasses (see _PortRuleBuilder).
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass, field, replace
from typing import Any, Final

__all__ = [
    "DEFAULT_NODE_PORTS",
    "KUBE_SERVICE_TYPE",
    "NAME_SUFFIX",
    "TYPE_PREFIX",
    "NodePortRange",
    "PortRule",
    "Protocol",
    "RuleError",
    "ServiceRule",
    "ServiceType",
    "check_rule",
    "dns1035_label_problem",
    "locate",
    "parse_rule",
    "port_names",
]


class ServiceType(enum.StrEnum):
    """The kind of Service a rule asks for.

    The values are our names, not Kubernetes' ``spec.type``: HEADLESS is a ClusterIP Service
    whose clusterIP is ``None`` (see :data:`KUBE_SERVICE_TYPE`). A str enum, because members
    are dict keys on the hot path and ``enum.Enum.__hash__`` is a Python-level call.
    """

    CLUSTER_IP = "ClusterIP"
    HEADLESS = "Headless"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"
    EXTERNAL_NAME = "ExternalName"


class Protocol(enum.StrEnum):
    """Transport protocol of a Service port, spelled as Kubernetes spells it."""

    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"


_CLUSTER_IP: Final = ServiceType.CLUSTER_IP
_HEADLESS: Final = ServiceType.HEADLESS
_NODE_PORT: Final = ServiceType.NODE_PORT
_LOAD_BALANCER: Final = ServiceType.LOAD_BALANCER
_EXTERNAL_NAME: Final = ServiceType.EXTERNAL_NAME
_TCP: Final = Protocol.TCP

#: ``spec.type`` of the Service built for each rule type.
KUBE_SERVICE_TYPE: Final[dict[ServiceType, str]] = {
    _CLUSTER_IP: "ClusterIP",
    _HEADLESS: "ClusterIP",
    _NODE_PORT: "NodePort",
    _LOAD_BALANCER: "LoadBalancer",
    _EXTERNAL_NAME: "ExternalName",
}

#: The one-character prefix that selects each rule type in text ('' for ClusterIP).
TYPE_PREFIX: Final[dict[ServiceType, str]] = {
    _CLUSTER_IP: "",
    _HEADLESS: "#",
    _NODE_PORT: "!",
    _LOAD_BALANCER: "^",
    _EXTERNAL_NAME: "@",
}

#: Appended to the Deployment's name to derive a Service name when the rule gives none.
NAME_SUFFIX: Final[dict[ServiceType, str]] = {
    _CLUSTER_IP: "",
    _HEADLESS: "-headless",
    _NODE_PORT: "-nodeport",
    _LOAD_BALANCER: "-lb",
    _EXTERNAL_NAME: "-external",
}

_PREFIX_TYPE: Final[dict[str, ServiceType]] = {v: k for k, v in TYPE_PREFIX.items() if v}

# How a person reads each type in an error sentence.
_TYPE_WORDS: Final[dict[ServiceType, str]] = {
    _CLUSTER_IP: "a ClusterIP rule",
    _HEADLESS: "a headless (#) rule",
    _NODE_PORT: "a NodePort (!) rule",
    _LOAD_BALANCER: "a LoadBalancer (^) rule",
    _EXTERNAL_NAME: "an ExternalName (@) rule",
}

_TRANSPORTS: Final[dict[str, Protocol]] = {
    "tcp": Protocol.TCP,
    "udp": Protocol.UDP,
    "sctp": Protocol.SCTP,
}
_TRANSPORT_SUFFIX: Final[dict[Protocol, str]] = {
    Protocol.TCP: "",
    Protocol.UDP: "/udp",
    Protocol.SCTP: "/sctp",
}

# Application protocols Kubernetes itself defines; the text form may leave off the prefix.
_K8S_APP_PROTOCOLS: Final[dict[str, str]] = {
    "h2c": "kubernetes.io/h2c",
    "ws": "kubernetes.io/ws",
    "wss": "kubernetes.io/wss",
}
_K8S_APP_SHORT: Final[dict[str, str]] = {v: k for k, v in _K8S_APP_PROTOCOLS.items()}


@dataclass(frozen=True, slots=True)
class NodePortRange:
    """The cluster's node port range (kube-apiserver ``--service-node-port-range``)."""

    low: int = 30000
    high: int = 32767

    def __post_init__(self) -> None:
        if not (1 <= self.low <= self.high <= 65535):
            raise ValueError(
                f"node port range {self.low}-{self.high} must lie within 1-65535 "
                "with the low end first"
            )

    @classmethod
    def parse(cls, text: str) -> NodePortRange:
        """Read ``"30000-32767"``; like kube-apiserver, ``"30000+2767"`` and ``"30000"`` too."""
        m = _RANGE_RE.fullmatch(text)
        if m is None:
            raise ValueError(
                f"node port range {text!r} is not of the form LOW-HIGH (e.g. 30000-32767)"
            )
        low = int(m[1])
        if m[2] == "-":
            high = int(m[3])
        elif m[2] == "+":
            high = low + int(m[3])
        else:
            high = low
        return cls(low, high)

    def __str__(self) -> str:
        return f"{self.low}-{self.high}"


_RANGE_RE: Final = re.compile(r"\s*+([0-9]{1,5})\s*+(?:([-+])\s*+([0-9]{1,5})\s*+)?")

DEFAULT_NODE_PORTS: Final = NodePortRange()


@dataclass(frozen=True, slots=True)
class PortRule:
    """One Service port.

    ``name`` is an explicit port name (structured specs, or ``(name)`` in text); without it
    the builder uses kubectl's ``<port>-<target>`` convention (see :func:`port_names`).
    """

    port: int
    target_port: int | str
    protocol: Protocol = Protocol.TCP
    node_port: int | None = None
    app_protocol: str | None = None
    name: str | None = None

    def canonical(self) -> str:
        """This port as canonical rule text (without the type prefix)."""
        target = self.target_port
        node = self.node_port
        if node is not None:
            text = f"{node}:{self.port}:{target}"
        elif target == self.port:
            text = str(self.port)
        else:
            text = f"{self.port}:{target}"
        if self.protocol is not _TCP or self.app_protocol is not None:
            text += _render_protocol(self.protocol, self.app_protocol)
        if self.name is not None:
            text += f"({self.name})"
        return text


@dataclass(frozen=True, slots=True)
class ServiceRule:
    """What one rule asks for: a Service type, its ports or host name, maybe its name."""

    type: ServiceType
    ports: tuple[PortRule, ...] = ()
    name: str | None = None
    external_name: str | None = None
    # The canonical text, once known: rendered on first use, or noted by the parser when the
    # text it read was already canonical. Derived from the other fields, so it takes no part
    # in equality, and replace() resets it.
    _canonical: str | None = field(default=None, init=False, repr=False, compare=False)

    def canonical(self) -> str:
        """Canonical rule text: ``parse_rule(rule.canonical()) == rule`` for a valid rule.

        No whitespace, ``80`` rather than ``80:80``, no ``/tcp``, the shortest spelling of
        Kubernetes' own app protocols (``/h2c``), explicit port names as ``(name)``. Never
        raises, even for an invalid rule (errors about structured specs quote it).
        """
        text = self._canonical
        if text is not None:
            return text
        head = f"{self.name}=" if self.name is not None else ""
        if self.type is _EXTERNAL_NAME:
            text = f"{head}@{self.external_name or ''}"
        else:
            prefix = TYPE_PREFIX.get(self.type, "?")
            ports = self.ports
            if len(ports) == 1:
                text = head + prefix + ports[0].canonical()
            else:
                text = head + prefix + ",".join([p.canonical() for p in ports])
        object.__setattr__(self, "_canonical", text)
        return text


class RuleError(Exception):
    """A rule that cannot be honoured, and why.

    ``index`` is the rule's position in the request, ``text`` the rule as the caller wrote it
    (canonical text for a structured spec), ``where`` the place of the problem (``"column 7"``
    for text, a field path such as ``"ports[1].node_port"`` for specs, ``""`` for the rule as a
    whole), ``column`` the 1-based column for text, and ``message`` the sentence for a person.
    """

    def __init__(
        self,
        index: int,
        text: str,
        where: str,
        column: int | None,
        message: str,
    ) -> None:
        # All arguments go to Exception so that the error pickles and copies intact.
        super().__init__(index, text, where, column, message)
        self.index = index
        self.text = text
        self.where = where
        self.column = column
        self.message = message

    def __str__(self) -> str:
        where = f", {self.where}" if self.where else ""
        return f"rule {self.index} {_show(self.text, 200)}{where}: {self.message}"


def _show(value: str, limit: int = 40) -> str:
    """Quote a token for a message: escaped, and cut short if a caller sent something huge."""
    if len(value) > limit:
        value = value[:limit] + "…"
    return json.dumps(value, ensure_ascii=False)


# --------------------------------------------------------------------------------------------
# Name checks, as kube-apiserver does them. Each returns None when the value is valid, else the
# end of a sentence ("... is not a valid X: it <reason>"). Lengths are checked before regexes,
# and the regexes cannot backtrack badly, so hostile input costs linear time.

_DNS1035_RE: Final = re.compile(r"[a-z](?:[-a-z0-9]*+(?<=[a-z0-9]))?")
_DNS1123_LABEL_RE: Final = re.compile(r"[a-z0-9](?:[-a-z0-9]*+(?<=[a-z0-9]))?")
_DNS1123_SUBDOMAIN_RE: Final = re.compile(
    r"[a-z0-9](?:[-a-z0-9]*+(?<=[a-z0-9]))?(?:\.[a-z0-9](?:[-a-z0-9]*+(?<=[a-z0-9]))?)*+"
)
_IANA_RE: Final = re.compile(r"(?=[-0-9]*+[a-z])[a-z0-9]++(?:-[a-z0-9]++)*+")
_QUALIFIED_PART_RE: Final = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_.]*+(?<=[A-Za-z0-9]))?")
_LOWER_ALNUM_DASH: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def _bad_char(value: str, allowed: frozenset[str]) -> str | None:
    for ch in value:
        if ch not in allowed:
            if "A" <= ch <= "Z":
                return "must be lowercase"
            return f"contains {_show(ch)}; only a-z, 0-9 and '-' are allowed"
    return None


def dns1035_label_problem(value: str) -> str | None:
    """Why ``value`` is not a DNS-1035 label (what Service names must be), or None."""
    if len(value) <= 63 and _DNS1035_RE.fullmatch(value):
        return None
    return _label_problem(value, first_letter=True)


def _dns1123_label_problem(value: str) -> str | None:
    if len(value) <= 63 and _DNS1123_LABEL_RE.fullmatch(value):
        return None
    return _label_problem(value, first_letter=False)


def _label_problem(value: str, *, first_letter: bool) -> str:
    if not value:
        return "is empty"
    if len(value) > 63:
        return f"is {len(value)} characters long, more than 63"
    bad = _bad_char(value, _LOWER_ALNUM_DASH)
    if bad is not None:
        return bad
    if first_letter and not value[0].isalpha():
        return "must start with a letter"
    if value[0] == "-":
        return "must start with a letter or digit"
    return "must end with a letter or digit"


def _iana_problem(value: str) -> str | None:
    """Why ``value`` is not an IANA service name (a named port), or None."""
    if len(value) <= 15 and _IANA_RE.fullmatch(value):
        return None
    if len(value) > 15:
        return f"is {len(value)} characters long, more than 15"
    bad = _bad_char(value, _LOWER_ALNUM_DASH)
    if bad is not None:
        return bad
    if value.startswith("-") or value.endswith("-"):
        return "must not start or end with '-'"
    if "--" in value:
        return "must not contain '--'"
    return "must contain at least one letter"


_SUBDOMAIN_CHARS: Final = _LOWER_ALNUM_DASH | {"."}


def _subdomain_problem(value: str) -> str | None:
    """Why ``value`` is not a lowercase DNS-1123 subdomain, or None."""
    if len(value) <= 253 and _DNS1123_SUBDOMAIN_RE.fullmatch(value):
        return None
    if not value:
        return "is empty"
    if len(value) > 253:
        return f"is {len(value)} characters long, more than 253"
    for ch in value:
        if ch not in _SUBDOMAIN_CHARS:
            if "A" <= ch <= "Z":
                return "must be lowercase"
            return f"contains {_show(ch)}; only a-z, 0-9, '-' and '.' are allowed"
    return "must be dot-separated parts that start and end with a letter or digit"


def _app_protocol_problem(value: str) -> str | None:
    """Why ``value`` is not a qualified name (what appProtocol must be), or None."""
    prefix, slash, name = value.rpartition("/")
    if slash:
        if "/" in prefix:
            return "may contain at most one '/'"
        if not prefix:
            return "has an empty prefix before '/'"
        problem = _subdomain_problem(prefix)
        if problem is not None:
            return f"has a prefix that is not a DNS subdomain: it {problem}"
    if not name:
        return "has an empty name" if slash else "is empty"
    if len(name) > 63:
        return f"has a name {len(name)} characters long, more than 63"
    if _QUALIFIED_PART_RE.fullmatch(name) is None:
        return (
            "must be letters, digits, '-', '_' or '.', starting and ending with a letter or "
            "digit, optionally after a domain prefix and '/' (e.g. example.com/my-protocol)"
        )
    return None


def _normalize_app_protocol(value: str) -> str:
    """Unprefixed names are IANA service names, which are case-insensitive: store them in
    lowercase; Kubernetes' own short names gain their ``kubernetes.io/`` prefix. Prefixed
    names are kept as written."""
    if "/" in value:
        return value
    low = value.lower()
    return _K8S_APP_PROTOCOLS.get(low, low)


def _one_edit_variants(word: str, alphabet: str) -> set[str]:
    """Every string one insertion, deletion, substitution or adjacent swap away from word."""
    variants: set[str] = set()
    for i in range(len(word) + 1):
        variants.update(word[:i] + ch + word[i:] for ch in alphabet)
    for i in range(len(word)):
        variants.add(word[:i] + word[i + 1 :])
        variants.update(word[:i] + ch + word[i + 1 :] for ch in alphabet)
    for i in range(len(word) - 1):
        variants.add(word[:i] + word[i + 1] + word[i] + word[i + 2 :])
    return variants


# Near misses of the transports, over the characters an app protocol name may hold (anything
# else is refused as an invalid app protocol anyway). Precomputed: a lookup on the hot path.
_NEAR_TRANSPORTS: Final[dict[str, str]] = {
    variant: transport
    for transport in ("sctp", "udp", "tcp")
    for variant in _one_edit_variants(transport, "abcdefghijklmnopqrstuvwxyz0123456789-_.")
    if variant not in _TRANSPORTS
}


def _near_transport(word: str) -> str | None:
    """The transport that lowercase ``word`` is one typo away from (``upd`` -> ``udp``).

    Anything after '/' that is not a transport is read as an application protocol on TCP, so
    without this guard ``80/upd`` would silently become TCP with appProtocol ``upd``.
    """
    return _NEAR_TRANSPORTS.get(word)


def _render_protocol(protocol: Protocol, app: str | None) -> str:
    """The ``/...`` suffix of a port: transport when not TCP, then the app protocol."""
    if app is None:
        return _TRANSPORT_SUFFIX.get(protocol, f"/{str(protocol).lower()}")
    shown = _K8S_APP_SHORT.get(app, app)
    first = shown.partition("/")[0].lower()
    if protocol is _TCP and first not in _TRANSPORTS and _near_transport(first) is None:
        return f"/{shown}"
    # Spell the transport out when the app protocol alone would read as (a typo of) one.
    return f"/{str(protocol).lower()}/{shown}"


# --------------------------------------------------------------------------------------------
# Checks shared by text rules and structured specs. Each returns (field, message) for the
# first problem, fields named as in PortRule so that specs get "ports[i].<field>" paths and
# text rules get the column of the token that holds that field.

_Problem = tuple[str, str]


def _port_problem(rtype: ServiceType, p: PortRule, node_ports: NodePortRange) -> _Problem | None:
    """Problems of one port on its own, in the order its fields appear in text."""
    node = p.node_port
    if node is not None:
        if rtype is not _NODE_PORT and rtype is not _LOAD_BALANCER:
            return (
                "node_port",
                f"node port {node} is not allowed on {_TYPE_WORDS[rtype]}; "
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
        problem = _iana_problem(target)
        if problem is not None:
            return (
                "target_port",
                f"target port name {_show(target)} is not a valid IANA service name: it {problem}",
            )
    app = p.app_protocol
    if app is not None:
        problem = _app_protocol_problem(app)
        if problem is not None:
            return ("app_protocol", f"app protocol {_show(app)} is not valid: it {problem}")
    if p.name is not None:
        problem = _dns1123_label_problem(p.name)
        if problem is not None:
            return (
                "name",
                f"port name {_show(p.name)} is not a valid DNS-1123 label: it {problem}",
            )
    return None


class _PortSet:
    """What the earlier ports of one rule use, to find clashes as each port is added."""

    __slots__ = ("by_key", "by_name", "by_node")

    def __init__(self) -> None:
        self.by_key: dict[tuple[int, Protocol], int] = {}
        self.by_node: dict[int, PortRule] = {}
        self.by_name: dict[str, int] = {}

    def add(self, p: PortRule) -> _Problem | None:
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
                return ("name", f"port name {_show(p.name)} appears twice in this rule")
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
    shared = {n for n in numbers if numbers.count(n) > 1}
    return tuple(
        p.name
        if p.name is not None
        else f"{p.port}-{p.target_port}-{str(p.protocol).lower()}"
        if p.port in shared
        else f"{p.port}-{p.target_port}"
        for p in ports
    )


def _port_names_problem(rule: ServiceRule) -> tuple[int, _Problem] | None:
    """A derived port name that clashes with an explicit one (the only way names can clash)."""
    seen: dict[str, int] = {}
    for i, name in enumerate(port_names(rule)):
        if name in seen:
            return i, (
                "name",
                f"port name {_show(name)} is also the name of port {seen[name] + 1} of this "
                "rule; give the ports distinct names",
            )
        seen[name] = i
    return None


# --------------------------------------------------------------------------------------------
# Text rules.

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


class _PortRuleBuilder:
    """Makes PortRule objects at a third of the cost of PortRule(...).

    A frozen dataclass's __init__ goes through object.__setattr__ for every field, which
    dominated the parser's profile. This class has the very same slots but plain attribute
    stores; the finished object then takes PortRule as its class (CPython allows __class__
    assignment between classes of identical layout) and is from then on an ordinary, frozen,
    PortRule. Checked at import time below, and by the tests.
    """

    __slots__ = PortRule.__slots__

    def __init__(
        self,
        port: int,
        target_port: int | str,
        protocol: Protocol,
        node_port: int | None,
        app_protocol: str | None,
        name: str | None,
    ) -> None:
        self.port = port
        self.target_port = target_port
        self.protocol = protocol
        self.node_port = node_port
        self.app_protocol = app_protocol
        self.name = name


class _ServiceRuleBuilder:
    """Makes ServiceRule objects, as _PortRuleBuilder makes PortRules."""

    __slots__ = ServiceRule.__slots__

    def __init__(
        self,
        type: ServiceType,
        ports: tuple[PortRule, ...],
        name: str | None,
        external_name: str | None,
        canonical: str | None,
    ) -> None:
        self.type = type
        self.ports = ports
        self.name = name
        self.external_name = external_name
        self._canonical = canonical


_new: Final = object.__new__


def _make_port(
    port: int,
    target: int | str,
    protocol: Protocol,
    node: int | None,
    app: str | None,
    name: str | None,
) -> PortRule:
    p = _PortRuleBuilder(port, target, protocol, node, app, name)
    p.__class__ = PortRule  # type: ignore[assignment]
    return p  # type: ignore[return-value]


def _make_rule(
    rtype: ServiceType,
    ports: tuple[PortRule, ...],
    name: str | None,
    external: str | None,
    canonical: str | None = None,
) -> ServiceRule:
    r = _ServiceRuleBuilder(rtype, ports, name, external, canonical)
    r.__class__ = ServiceRule  # type: ignore[assignment]
    return r  # type: ignore[return-value]


# Fail at import, not later, if the dataclasses and their builders ever drift apart.
if _make_rule(_CLUSTER_IP, (_make_port(1, 2, _TCP, None, None, None),), None, None) != (
    ServiceRule(_CLUSTER_IP, (PortRule(1, 2),))
):  # pragma: no cover
    raise ImportError("server.rules: the rule builders do not match the dataclasses")


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
    text: str, index: int, node_ports: NodePortRange = DEFAULT_NODE_PORTS
) -> ServiceRule:
    """Parse one text rule into a validated :class:`ServiceRule`, or raise :class:`RuleError`.

    ``index`` is the rule's position in the request; it only appears in errors.
    """
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
                r = _new(_ServiceRuleBuilder)
                r.type = rtype
                r.ports = (p,)
                r.name = name
                r.external_name = None
                r._canonical = text if canonical else None
                r.__class__ = ServiceRule  # type: ignore[assignment]
                return r  # type: ignore[return-value]
    elif "," in text:
        rule = _parse_fast_multi(text, node_ports)
        if rule is not None:
            return rule
    elif "@" in text:
        m = _FAST_EXTERNAL_RE.fullmatch(text)
        if m is not None and _DNS1123_SUBDOMAIN_RE.fullmatch(m[2]):
            name = m[1]
            if name is None or name[-1] != "-":
                return _make_rule(_EXTERNAL_NAME, (), name, m[2], text)
    return _parse_general(text, index, node_ports)


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
    # Attribute stores on a bare object: cheaper still than calling _PortRuleBuilder.
    p = _new(_PortRuleBuilder)
    p.port = port
    p.target_port = target
    p.protocol = protocol
    p.node_port = node
    p.app_protocol = app
    p.name = None
    p.__class__ = PortRule  # type: ignore[assignment]
    return p  # type: ignore[return-value]


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
        for q in ports:
            # Clashes (see _PortSet) are left to the general path to explain.
            if (q.port == p.port and q.protocol is p.protocol) or (
                p.node_port is not None and q.node_port == p.node_port and q.port != p.port
            ):
                return None
        if proto == "tcp" or (third is None and second is not None and p.target_port == p.port):
            canonical = False
        ports.append(p)
        pos = m.end()
    return _make_rule(rtype, tuple(ports), name, None, text if canonical else None)


def _parse_general(text: str, index: int, node_ports: NodePortRange) -> ServiceRule:
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
            return _parse_external_name(text, pos, prefix_at, index, name)
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

        p = _make_port(port, target, protocol, node, app, port_name)
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

    rule = _make_rule(rtype, tuple(ports), name, None)
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
    text: str, pos: int, prefix_at: int, index: int, name: str | None
) -> ServiceRule:
    host = text[pos:].rstrip()
    if not host:
        raise _text_error(
            index,
            text,
            prefix_at,
            "nothing follows '@'; expected a host name such as db.example.com",
        )
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
    return _make_rule(_EXTERNAL_NAME, (), name, host)


def _external_name_problem(host: str) -> str | None:
    problem = _subdomain_problem(host)
    if problem is None:
        return None
    if host.endswith(".") and _subdomain_problem(host[:-1]) is None:
        # The apiserver would take it, kubectl create service would not; the dot adds nothing
        # to a CNAME target, so refuse it plainly rather than store two spellings of one name.
        problem = f"must not end with '.'; write {host[:-1]}"
    return f"external name {_show(host)} is not a lowercase DNS-1123 subdomain: it {problem}"


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


# --------------------------------------------------------------------------------------------
# Structured specs.


def check_rule(
    rule: ServiceRule, index: int, node_ports: NodePortRange = DEFAULT_NODE_PORTS
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
        raise fail("type", f"unknown Service type {_show(str(rtype))}")
    if rule.name is not None:
        if not isinstance(rule.name, str):
            raise fail("name", "the Service name must be a string")
        problem = dns1035_label_problem(rule.name)
        if problem is not None:
            raise fail(
                "name",
                f"Service name {_show(rule.name)} is not a valid DNS-1035 label: it {problem}",
            )
    if rtype is _EXTERNAL_NAME:
        if rule.ports:
            raise fail("ports", "an ExternalName rule has no ports; it only names a host")
        if not rule.external_name:
            raise fail("external_name", "an ExternalName rule needs a host name")
        if not isinstance(rule.external_name, str):
            raise fail("external_name", "the external name must be a string")
        problem = _external_name_problem(rule.external_name)
        if problem is not None:
            raise fail("external_name", problem)
        return rule
    if rule.external_name is not None:
        raise fail(
            "external_name", f"only an ExternalName rule has a host name, not {_TYPE_WORDS[rtype]}"
        )
    if not rule.ports:
        raise fail("ports", f"{_TYPE_WORDS[rtype]} needs at least one port")

    ports: list[PortRule] = []
    changed = False
    seen = _PortSet()
    for i, p in enumerate(rule.ports):
        type_problem = _port_type_problem(p)
        if type_problem is not None:
            raise fail(f"ports[{i}].{type_problem[0]}", type_problem[1])
        if p.app_protocol is not None:
            app = _normalize_app_protocol(p.app_protocol)
            if app != p.app_protocol:
                p = replace(p, app_protocol=app)
                changed = True
        port_problem = _port_problem(rtype, p, node_ports) or seen.add(p)
        if port_problem is not None:
            raise fail(f"ports[{i}].{port_problem[0]}", port_problem[1])
        ports.append(p)
    checked = replace(rule, ports=tuple(ports)) if changed else rule
    if seen.by_name:
        clash = _port_names_problem(checked)
        if clash is not None:
            raise fail(f"ports[{clash[0]}].{clash[1][0]}", clash[1][1])
    return checked


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _port_type_problem(p: Any) -> _Problem | None:
    """Wrong Python types in a spec built by other code: reported, never a TypeError."""
    if not isinstance(p, PortRule):
        return ("port", "each port must be a PortRule")
    if not _is_int(p.port):
        return ("port", f"port {_show(str(p.port))} is not a number")
    if not (_is_int(p.target_port) or isinstance(p.target_port, str)):
        return ("target_port", "the target port must be a number or a name")
    if not isinstance(p.protocol, Protocol):
        return ("protocol", f"unknown protocol {_show(str(p.protocol))}; use TCP, UDP or SCTP")
    if p.node_port is not None and not _is_int(p.node_port):
        return ("node_port", f"node port {_show(str(p.node_port))} is not a number")
    if p.app_protocol is not None and not isinstance(p.app_protocol, str):
        return ("app_protocol", "the app protocol must be a string")
    if p.name is not None and not isinstance(p.name, str):
        return ("name", "the port name must be a string")
    return None


def _safe_canonical(rule: ServiceRule) -> str:
    try:
        return rule.canonical()
    except Exception:  # a spec so malformed it cannot even be shown; say so instead
        return "<unprintable rule>"
