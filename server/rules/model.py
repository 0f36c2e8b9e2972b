"""The rule model: what a rule asks for, and how it reads as canonical text.

The Service types and protocols; the tables that tie each type to its text prefix, its
Kubernetes ``spec.type`` and its derived name suffix; the frozen dataclasses :class:`PortRule`
and :class:`ServiceRule` with their canonical rendering; :class:`NodePortRange`; and
:class:`RuleError`, which the parsers and ``check_rule`` raise. Nothing here checks a rule's
values: that is the job of the modules that import this one (:mod:`.names`, :mod:`.ports`,
:mod:`.grammar`, :mod:`.specs`), and this one imports none of them.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from typing import Final


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


#: ``spec.type`` of the Service built for each rule type.
KUBE_SERVICE_TYPE: Final[dict[ServiceType, str]] = {
    ServiceType.CLUSTER_IP: "ClusterIP",
    ServiceType.HEADLESS: "ClusterIP",
    ServiceType.NODE_PORT: "NodePort",
    ServiceType.LOAD_BALANCER: "LoadBalancer",
    ServiceType.EXTERNAL_NAME: "ExternalName",
}

#: The one-character prefix that selects each rule type in text ('' for ClusterIP).
TYPE_PREFIX: Final[dict[ServiceType, str]] = {
    ServiceType.CLUSTER_IP: "",
    ServiceType.HEADLESS: "#",
    ServiceType.NODE_PORT: "!",
    ServiceType.LOAD_BALANCER: "^",
    ServiceType.EXTERNAL_NAME: "@",
}

#: Appended to the Deployment's name to derive a Service name when the rule gives none.
NAME_SUFFIX: Final[dict[ServiceType, str]] = {
    ServiceType.CLUSTER_IP: "",
    ServiceType.HEADLESS: "-headless",
    ServiceType.NODE_PORT: "-nodeport",
    ServiceType.LOAD_BALANCER: "-lb",
    ServiceType.EXTERNAL_NAME: "-external",
}

#: The rule type each text prefix selects (TYPE_PREFIX read backwards, ClusterIP's '' left out).
PREFIX_TYPE: Final[dict[str, ServiceType]] = {v: k for k, v in TYPE_PREFIX.items() if v}

#: The longest rule text accepted, checked before a rule is parsed. Far beyond what a person
#: writes (a rule of 256 ports spelled out in full, names and app protocols included, fits),
#: it bounds what one hostile rule can cost, and the echo of a refused rule in its result.
MAX_RULE_LENGTH: Final = 16 * 1024
#: The most ports one rule may have (text or structured), checked before the ports are read.
MAX_PORTS: Final = 256

#: How a person reads each type in an error sentence.
TYPE_WORDS: Final[dict[ServiceType, str]] = {
    ServiceType.CLUSTER_IP: "a ClusterIP rule",
    ServiceType.HEADLESS: "a headless (#) rule",
    ServiceType.NODE_PORT: "a NodePort (!) rule",
    ServiceType.LOAD_BALANCER: "a LoadBalancer (^) rule",
    ServiceType.EXTERNAL_NAME: "an ExternalName (@) rule",
}

#: The transports as text rules spell them (after '/', in lowercase).
TRANSPORTS: Final[dict[str, Protocol]] = {
    "tcp": Protocol.TCP,
    "udp": Protocol.UDP,
    "sctp": Protocol.SCTP,
}
_TRANSPORT_SUFFIX: Final[dict[Protocol, str]] = {
    Protocol.TCP: "",
    Protocol.UDP: "/udp",
    Protocol.SCTP: "/sctp",
}

#: Application protocols Kubernetes itself defines; the text form may leave off the prefix.
K8S_APP_PROTOCOLS: Final[dict[str, str]] = {
    "h2c": "kubernetes.io/h2c",
    "ws": "kubernetes.io/ws",
    "wss": "kubernetes.io/wss",
}
_K8S_APP_SHORT: Final[dict[str, str]] = {v: k for k, v in K8S_APP_PROTOCOLS.items()}


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
        if self.protocol is not Protocol.TCP or self.app_protocol is not None:
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

    def canonical(self) -> str:
        """Canonical rule text: ``parse_rule(rule.canonical()) == rule`` for a valid rule.

        No whitespace, ``80`` rather than ``80:80``, no ``/tcp``, the shortest spelling of
        Kubernetes' own app protocols (``/h2c``), explicit port names as ``(name)``. Never
        raises, even for an invalid rule (errors about structured specs quote it).
        """
        head = f"{self.name}=" if self.name is not None else ""
        if self.type is ServiceType.EXTERNAL_NAME:
            text = f"{head}@{self.external_name or ''}"
        else:
            prefix = TYPE_PREFIX.get(self.type, "?")
            text = head + prefix + ",".join(p.canonical() for p in self.ports)
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
        return f"rule {self.index} {quoted(self.text, 200)}{where}: {self.message}"


def quoted(value: str, limit: int = 40) -> str:
    """Quote a token for a message: escaped, and cut short if a caller sent something huge."""
    if len(value) > limit:
        value = value[:limit] + "…"
    return json.dumps(value, ensure_ascii=False)


# --------------------------------------------------------------------------------------------
# Protocols in canonical text. The typo table is here because rendering needs it (a TCP app
# protocol that reads like a transport gets its transport spelled out); the parsers use it too.


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
    if variant not in TRANSPORTS
}


def near_transport(word: str) -> str | None:
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
    if protocol is Protocol.TCP and first not in TRANSPORTS and near_transport(first) is None:
        return f"/{shown}"
    # Spell the transport out when the app protocol alone would read as (a typo of) one.
    return f"/{str(protocol).lower()}/{shown}"
