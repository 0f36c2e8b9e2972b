"""Name checks, as kube-apiserver does them, for every name a rule can hold.

Service names (DNS-1035 labels), port names (DNS-1123 labels), named target ports (IANA
service names), external names (lowercase DNS-1123 subdomains) and app protocols (qualified
names), with the regexes and length limits of ``k8s.io/apimachinery/pkg/util/validation``,
so that a name accepted here is not refused later by the apiserver.

Each ``*_problem`` function returns None when the value is valid, else the end of a sentence
("... is not a valid X: it <reason>"); :func:`external_name_problem` returns the whole
sentence. Lengths are checked before regexes, and the regexes are possessive and cannot
backtrack badly, so hostile input costs linear time.
"""

from __future__ import annotations

import re
from typing import Final

from server.rules.model import K8S_APP_PROTOCOLS, quoted

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
            return f"contains {quoted(ch)}; only a-z, 0-9 and '-' are allowed"
    return None


def dns1035_label_problem(value: str) -> str | None:
    """Why ``value`` is not a DNS-1035 label (what Service names must be), or None."""
    if len(value) <= 63 and _DNS1035_RE.fullmatch(value):
        return None
    return _label_problem(value, first_letter=True)


def dns1123_label_problem(value: str) -> str | None:
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


def iana_service_name_problem(value: str) -> str | None:
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


def dns1123_subdomain_problem(value: str) -> str | None:
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
            return f"contains {quoted(ch)}; only a-z, 0-9, '-' and '.' are allowed"
    return "must be dot-separated parts that start and end with a letter or digit"


def app_protocol_problem(value: str) -> str | None:
    """Why ``value`` is not a qualified name (what appProtocol must be), or None."""
    prefix, slash, name = value.rpartition("/")
    if slash:
        if "/" in prefix:
            return "may contain at most one '/'"
        if not prefix:
            return "has an empty prefix before '/'"
        problem = dns1123_subdomain_problem(prefix)
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


def normalize_app_protocol(value: str) -> str:
    """Unprefixed names are IANA service names, which are case-insensitive: store them in
    lowercase; Kubernetes' own short names gain their ``kubernetes.io/`` prefix. Prefixed
    names are kept as written."""
    if "/" in value:
        return value
    low = value.lower()
    return K8S_APP_PROTOCOLS.get(low, low)


def external_name_problem(host: str) -> str | None:
    """The whole sentence for a host that cannot be an ExternalName target, or None."""
    problem = dns1123_subdomain_problem(host)
    if problem is None:
        return None
    if host.endswith(".") and dns1123_subdomain_problem(host[:-1]) is None:
        # The apiserver would take it, kubectl create service would not; the dot adds nothing
        # to a CNAME target, so refuse it plainly rather than store two spellings of one name.
        problem = f"must not end with '.'; write {host[:-1]}"
    return f"external name {quoted(host)} is not a lowercase DNS-1123 subdomain: it {problem}"
