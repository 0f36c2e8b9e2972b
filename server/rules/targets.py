"""Where an ExternalName may point: not at an address, the node, or the cluster itself.

An ExternalName Service is a CNAME in the cluster's DNS, and ingress controllers and gateways
take its target as the upstream host to connect to, with their own network position and
credentials (CVE-2021-25740). A target of ``localhost``, ``169.254.169.254`` (the cloud's
metadata service) or ``kubernetes.default.svc.cluster.local`` would let whoever may create an
ExternalName Service reach the proxy's own node, the node's cloud credentials, the API server or
another namespace's Service through that proxy: a confused deputy. So k8sailor refuses them:

- **IP addresses**, in every spelling a resolver or URL parser reads as one (``127.0.0.1``,
  ``127.1``, ``0x7f.1``, ``2130706433``, ``017700000001``, ``[::1]``), and any name whose last
  label starts with a digit (no top-level domain does, and URL parsers read such names as IPv4
  addresses). An ExternalName is a DNS name; no operator setting allows an address.
- **Names of the host itself or its link**: ``localhost`` and everything under it (RFC 6761),
  the loopback names of distributions' ``/etc/hosts`` (``localhost.localdomain``,
  ``ip6-localhost``, ...), ``.localdomain``, ``.local`` (multicast DNS), ``.internal`` (reserved
  for private networks; GCE's ``metadata.google.internal`` and AWS's node names live there) and
  ``.arpa`` (DNS infrastructure, ``home.arpa`` included).
- **Names inside the cluster**: the cluster domain and everything under it, names ending in
  ``.svc`` or ``.pod`` (a pod's resolver completes them with the cluster domain), names ending
  in a namespace Kubernetes itself creates (``kubernetes.default``), names shaped as a
  Service's name under any cluster domain (``<service>.<namespace>.svc.<anything>``), and names
  without a dot (``kubernetes``: a pod's resolver completes them to a Service of its own
  namespace).

The operator may allow a suffix (``--allow-external-name svc.cluster.local``): a name equal to
it or under it is then accepted, whatever the lists above say, IP addresses excepted.

Case and a trailing dot change nothing for a resolver, so they change nothing here: the checks
read the name in lowercase without its trailing dots, before the DNS-1123 syntax check (which
then refuses both spellings anyway, with its own message). Punycode labels (``xn--``) are
decoded and mapped as IDNA does (nameprep), and the checks apply to that form too; a label that
is not valid punycode, or that only encodes plain ASCII, is refused.

What this cannot see: where a public name resolves. A name the caller controls in public DNS
can point at 127.0.0.1 as well; only the proxy that connects knows the address, so proxies
should still refuse loopback, link-local and cluster addresses themselves (docs/rules.md).

Pure like the rest of the package. The checks are a few string operations for an ordinary
public name.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from encodings.idna import nameprep
from typing import Final

from server.rules.model import quoted
from server.rules.names import dns1123_subdomain_problem

#: The cluster's DNS domain when the operator says nothing (kubelet's ``--cluster-domain``).
DEFAULT_CLUSTER_DOMAIN: Final = "cluster.local"

_ALLOW_HINT: Final = "; not allowed on this server (see --allow-external-name)"
_NOT_AN_ADDRESS: Final = "; an ExternalName must be a DNS name, never an IP address"

# Names that /etc/hosts of common distributions (Debian, Fedora, Alpine) map to loopback.
_LOOPBACK_NAMES: Final = frozenset(
    {
        "localhost",
        "localhost4",
        "localhost6",
        "ip6-localhost",
        "ip6-loopback",
        "localhost.localdomain",
        "localhost4.localdomain4",
        "localhost6.localdomain6",
    }
)

# Top-level labels that never name a public host, and why, for the error sentence.
_SPECIAL_TLDS: Final[dict[str, str]] = {
    "localhost": "a loopback name (RFC 6761): it points at the host of whoever resolves it",
    "localdomain": "under .localdomain, the local host's own domain in /etc/hosts",
    "localdomain4": "under .localdomain4, the local host's own domain in /etc/hosts",
    "localdomain6": "under .localdomain6, the local host's own domain in /etc/hosts",
    "local": "a multicast DNS name (.local): it is resolved on the resolver's own link",
    "internal": "under .internal, reserved for private networks, where cloud metadata "
    "(metadata.google.internal) and node names live",
    "arpa": "under .arpa, DNS infrastructure (reverse lookups, home.arpa), not a host",
    "svc": "a name of the cluster: a pod's resolver completes .svc with the cluster domain",
    "pod": "a name of the cluster: a pod's resolver completes .pod with the cluster domain",
}

# Namespaces Kubernetes itself creates: "x.default" is completed by a pod's resolver (search
# list "svc.<cluster domain>") to Service x of namespace default; kubernetes.default is the
# API server. Never top-level domains.
_KUBE_NAMESPACES: Final = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})

# What a host name is made of once lowercase; anything else is left to the syntax check.
_HOSTISH_RE: Final = re.compile(r"[-a-z0-9.]++")
# A label inet_aton (and the WHATWG URL parser) reads as a number: decimal, 0x hex, 0 octal.
_NUMBER_LABEL_RE: Final = re.compile(r"0x[0-9a-f]*+|[0-9]++")
_IDNA_DOTS: Final = ("\u3002", "\uff0e", "\uff61")
# Well beyond a valid name (253 characters and a dot); longer ones fail the syntax check, and
# are not decoded or parsed here, so a hostile host costs nothing.
_MAX_CHECKED: Final = 254


def normalized_domain(text: str) -> str:
    """A domain as an operator may write it (``Cluster.Local.``, ``.svc.cluster.local``) in
    the one spelling the checks compare: lowercase, no leading or trailing dot."""
    return text.strip().lower().strip(".")


def domain_problem(domain: str) -> str | None:
    """Why a normalized domain cannot be a cluster domain or an allowed suffix, or None."""
    problem = dns1123_subdomain_problem(domain)
    if problem is not None:
        return f"{quoted(domain)} is not a lowercase DNS-1123 subdomain: it {problem}"
    last = domain.rpartition(".")[2]
    if not last[0].isalpha():
        return (
            f"{quoted(domain)} ends in a label that starts with a digit, which reads as an IP "
            "address; IP addresses are never allowed as ExternalName targets"
        )
    return None


@dataclass(frozen=True, slots=True)
class ExternalNamePolicy:
    """Which ExternalName targets the server accepts beyond public DNS names: the cluster's
    domain (refused, with everything under it) and the suffixes the operator allows.
    Both normalized (see :func:`normalized_domain`); checked when built."""

    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN
    allowed: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for what, domain in (
            ("cluster domain", self.cluster_domain),
            *(("allowed suffix", suffix) for suffix in self.allowed),
        ):
            if domain != normalized_domain(domain):
                raise ValueError(
                    f"{what} {quoted(domain)} must be written {quoted(normalized_domain(domain))}"
                )
            problem = domain_problem(domain)
            if problem is not None:
                raise ValueError(f"{what} {problem}")

    def allows(self, name: str) -> bool:
        """True when the operator allowed this (normalized) name: it is an allowed suffix or
        lies under one."""
        return any(name == suffix or name.endswith("." + suffix) for suffix in self.allowed)


DEFAULT_EXTERNAL_NAMES: Final = ExternalNamePolicy()


def external_target_problem(host: str, policy: ExternalNamePolicy) -> str | None:
    """The whole sentence for an ExternalName target this server refuses, or None.

    Only the meaning of a name is judged here, of one that is a DNS-1123 subdomain once in
    lowercase and without its trailing dots (and of IPv6 addresses, which are not); whether it
    is one as written is the syntax check's job (``names.external_name_problem``), which runs
    after this one, so that ``LOCALHOST`` is refused as a loopback name and not for its case.
    """
    if len(host) > _MAX_CHECKED:
        return None
    name = host.lower().rstrip(".")
    if ":" in name:
        return _address_with_colon(host, name)
    if dns1123_subdomain_problem(name) is not None:
        # Not a host name even in lowercase without its dot: the syntax check says why.
        return None
    shown = quoted(host)
    address = _address_problem(shown, name)
    if address is not None:
        return address
    decoded: str | None = None
    if "xn--" in name:
        decoded, problem = _idna_form(name)
        if problem is not None:
            return f"external name {shown} {problem}"
        if decoded is not None:
            address = _address_problem(f"{shown} (IDNA {quoted(decoded)})", decoded)
            if address is not None:
                return address
    if policy.allows(name):
        return None
    # The decoded form first: it says what the name means to those who decode it.
    for form in (name,) if decoded is None else (decoded, name):
        reason = _special_name(form, policy)
        if reason is not None:
            seen = shown if form is name else f"{shown} (IDNA {quoted(form)})"
            return f"external name {seen} is {reason}{_ALLOW_HINT}"
    return None


def _special_name(name: str, policy: ExternalNamePolicy) -> str | None:
    """Why a lowercase name without trailing dot is not a public host name, or None."""
    dot = name.rfind(".")
    if name in _LOOPBACK_NAMES:
        return "a loopback name: it points at the host of whoever resolves it"
    domain = policy.cluster_domain
    if name == domain or name.endswith("." + domain):
        return (
            f"inside the cluster (the cluster domain {domain}): it would reach the API server "
            "or another namespace's Service"
        )
    if dot < 0:
        if name == "kubernetes":
            return "a name of the cluster: a pod's resolver completes it to the API server"
        return (
            "a name without a dot: a pod's resolver completes it with its search list, to a "
            "Service of the pod's own namespace"
        )
    last = name[dot + 1 :]
    reason = _SPECIAL_TLDS.get(last)
    if reason is not None:
        return reason
    labels = name.split(".")
    if "svc" in labels[2:-1]:
        # <service>.<namespace>.svc.<domain>: a Service's name in a cluster whose domain is
        # not the one this server was told (--cluster-domain), or a neighbouring cluster's.
        return (
            "shaped as a Service's name inside a cluster (<service>.<namespace>.svc.<cluster "
            "domain>)"
        )
    if last in _KUBE_NAMESPACES:
        return (
            f"a name of the cluster: a pod's resolver completes it to {name}.svc.{domain}, a "
            f"Service of namespace {last}"
        )
    return None


def _address_problem(shown: str, name: str) -> str | None:
    """The sentence for a name that is, or reads as, an IPv4 address; None otherwise."""
    last = name[name.rfind(".") + 1 :]
    if not last or not last[0].isdigit():
        return None
    address = _inet_aton(name)
    if address is not None:
        canonical = str(address)
        said = "is the IP address" if canonical == name else "reads as the IPv4 address"
        return f"external name {shown} {said} {canonical}{_kind(address)}{_NOT_AN_ADDRESS}"
    labels = name.split(".")
    if len(labels) <= 4 and all(_NUMBER_LABEL_RE.fullmatch(label) for label in labels):
        return (
            f"external name {shown} is made of numbers, which reads as an IPv4 address"
            f"{_NOT_AN_ADDRESS}"
        )
    return (
        f"external name {shown} ends in the label {quoted(last)}, which starts with a digit: "
        "no top-level domain does, and URL parsers read such names as IPv4 addresses"
        f"{_NOT_AN_ADDRESS}"
    )


def _inet_aton(name: str) -> ipaddress.IPv4Address | None:
    """The address inet_aton (glibc, musl, Go's and Python's resolvers through it, the WHATWG
    URL parser) reads in name: one to four numbers, each decimal, 0x hex or 0 octal, the last
    filling the remaining bytes (127.1 is 127.0.0.1). None if it is not such a name."""
    labels = name.split(".")
    if len(labels) > 4:
        return None
    values: list[int] = []
    for label in labels:
        if label.startswith("0x"):
            digits, base = label[2:], 16
        elif len(label) > 1 and label[0] == "0":
            digits, base = label[1:], 8
        else:
            digits, base = label, 10
        digits = digits.lstrip("0") or "0"
        # Twelve digits hold more than 32 bits in any of the bases: no need to convert more.
        if len(digits) > 12 or (base != 16 and not digits.isdigit()):
            return None
        try:
            values.append(int(digits, base))
        except ValueError:  # 8 or 9 in octal, or not a number at all
            return None
    *head, rest = values
    if any(value > 255 for value in head) or rest >= 1 << (8 * (4 - len(head))):
        return None
    number = rest
    for i, value in enumerate(head):
        number |= value << (8 * (3 - i))
    return ipaddress.IPv4Address(number)


def _address_with_colon(host: str, name: str) -> str | None:
    """A host with ':' is an IPv6 address, or an address with a port ("127.0.0.1:80",
    "[::1]:80"), or not an address at all (the syntax check then says what is wrong)."""
    candidates = [name]
    head, _, port = name.rpartition(":")
    if port.isdigit() and head:
        candidates.append(head)
    for candidate in candidates:
        inner = candidate[1:-1] if candidate[:1] == "[" and candidate[-1:] == "]" else candidate
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
        try:
            address = ipaddress.IPv6Address(inner)
        except ValueError:
            address = _inet_aton(inner) if _HOSTISH_RE.fullmatch(inner) else None
        if address is not None:
            with_port = "" if candidate is name else ", with a port"
            return (
                f"external name {quoted(host)} is the IP address {address.compressed}"
                f"{_kind(address)}{with_port}{_NOT_AN_ADDRESS}"
            )
    return None


_METADATA: Final = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)


def _kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """What kind of address this is, as " (...)" for the sentence, or ""."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in _METADATA:
        return " (link-local: the cloud metadata service)"
    if address.is_loopback:
        return " (loopback)"
    if address.is_link_local:
        return " (link-local)"
    if address.is_unspecified:
        return " (unspecified: this host)"
    if address.is_private:
        return " (private)"
    return ""


def _idna_form(name: str) -> tuple[str | None, str | None]:
    """(the name with its punycode labels decoded and mapped as IDNA does, None); or (None,
    the end of a sentence) for a label that no IDNA library should take: not punycode, or
    a disguise of plain ASCII (localhost in fullwidth letters maps to localhost)."""
    decoded: list[str] = []
    for label in name.split("."):
        if not label.startswith("xn--"):
            decoded.append(label)
            continue
        if len(label) > 63:
            return None, None  # the syntax check refuses it
        try:
            text = label[4:].encode("ascii").decode("punycode")
        except (UnicodeError, ValueError, IndexError, OverflowError):
            return None, f"has the label {quoted(label)}, which is not valid punycode"
        for dot in _IDNA_DOTS:
            text = text.replace(dot, ".")
        try:
            mapped = ".".join(nameprep(part) for part in text.split("."))
        except UnicodeError:
            return None, (
                f"has the label {quoted(label)}, which decodes to {quoted(text)}: characters "
                "IDNA prohibits"
            )
        if mapped.isascii():
            return None, (
                f"has the label {quoted(label)}, which IDNA reads as the plain ASCII "
                f"{quoted(mapped)}: an internationalized label must hold other characters"
            )
        decoded.append(mapped)
    return ".".join(decoded).lower().rstrip("."), None
