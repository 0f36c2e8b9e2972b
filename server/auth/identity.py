"""Who is calling, as Kubernetes names users: pure parsing of certificates and XFCC headers.

A caller is a user name and its groups, exactly what a SubjectAccessReview asks about. The
rules follow kube-apiserver's, so that a RoleBinding means the same thing to k8sailor as to the
cluster: a client certificate's subject CN is the user and its O values are the groups; a SPIFFE
ID of the Kubernetes shape (``spiffe://<trust-domain>/ns/<ns>/sa/<sa>``, as Istio and SPIRE issue
them) is that namespace's ServiceAccount; and every authenticated caller is also in
``system:authenticated``, as the API server's own authenticator adds it.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.x509.oid import NameOID

from server.rules import dns1123_label_problem, dns1123_subdomain_problem

AUTHENTICATED_GROUP = "system:authenticated"
SERVICE_ACCOUNTS_GROUP = "system:serviceaccounts"


class Method(enum.StrEnum):
    """How the caller proved who it is (named in the request log)."""

    CERTIFICATE = "certificate"  # client certificate subject (CN, O)
    SPIFFE = "spiffe"  # client certificate with a SPIFFE URI SAN
    TOKEN = "token"  # bearer token, checked with a TokenReview
    FORWARDED = "forwarded-client-cert"  # the mesh sidecar's x-forwarded-client-cert header
    NONE = "none"  # authentication is off and nothing was presented


@dataclass(frozen=True, slots=True)
class Caller:
    """A user as Kubernetes authorizes it. uid and extra come from TokenReviews only."""

    user: str
    groups: tuple[str, ...]
    method: Method
    uid: str = ""
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def authenticated(self) -> bool:
        return self.method is not Method.NONE


ANONYMOUS = Caller(user="system:anonymous", groups=("system:unauthenticated",), method=Method.NONE)


class IdentityError(ValueError):
    """What was presented cannot name a caller; the message says why."""


# The path of a Kubernetes SPIFFE ID; the trust domain is whatever the client CA vouches for.
_SPIFFE_PATH = re.compile(r"/ns/([^/]+)/sa/([^/]+)")


def service_account(namespace: str, name: str, method: Method) -> Caller:
    """The ServiceAccount user with the groups kube-apiserver gives it."""
    return Caller(
        user=f"system:serviceaccount:{namespace}:{name}",
        groups=(
            SERVICE_ACCOUNTS_GROUP,
            f"{SERVICE_ACCOUNTS_GROUP}:{namespace}",
            AUTHENTICATED_GROUP,
        ),
        method=method,
    )


def from_spiffe_id(uri: str, method: Method) -> Caller | None:
    """The ServiceAccount a SPIFFE ID of the Kubernetes shape names, or None for another shape.

    Raises IdentityError for an ID of the right shape whose names Kubernetes could not have.
    """
    if not uri.startswith("spiffe://"):
        return None
    rest = uri[len("spiffe://") :]
    domain, slash, path = rest.partition("/")
    if not domain or not slash:
        return None
    match = _SPIFFE_PATH.fullmatch("/" + path)
    if match is None:
        return None
    namespace, name = match.groups()
    problem = dns1123_label_problem(namespace)
    if problem is not None:
        raise IdentityError(f"SPIFFE ID {uri!r}: namespace {namespace!r} {problem}")
    problem = dns1123_subdomain_problem(name)
    if problem is not None:
        raise IdentityError(f"SPIFFE ID {uri!r}: service account {name!r} {problem}")
    return service_account(namespace, name, method)


def from_certificate(pem: bytes) -> Caller | None:
    """The caller a verified client certificate names, or None when it names nobody.

    The TLS layer has already checked the chain against --client-ca-file; this only reads it.
    """
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError as error:
        raise IdentityError(f"unreadable client certificate: {error}") from error
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    spiffe = [uri for uri in uris if uri.startswith("spiffe://")]
    if len(spiffe) > 1:
        raise IdentityError(
            f"the client certificate carries {len(spiffe)} SPIFFE IDs ({', '.join(spiffe)}); "
            "an SVID has exactly one"
        )
    if spiffe:
        caller = from_spiffe_id(spiffe[0], Method.SPIFFE)
        if caller is not None:
            return caller
    names = [
        _text(value.value)
        for value in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ]
    if not names or not names[0]:
        return None
    organizations = [
        _text(value.value)
        for value in certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    ]
    groups = tuple(dict.fromkeys([*organizations, AUTHENTICATED_GROUP]))
    return Caller(user=names[0], groups=groups, method=Method.CERTIFICATE)


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def forwarded_client_uri(header: str) -> str | None:
    """The URI of the client in Envoy's x-forwarded-client-cert header, or None.

    The header is a comma-separated list of elements, one per proxy hop, each a
    semicolon-separated list of key=value pairs whose values may be double-quoted (with \\"
    inside). The sidecar in our own pod appends the last element, so that one describes the
    client it verified; earlier elements came from hops we cannot vouch for.
    """
    elements = _split_quoted(header, ",")
    if not elements:
        return None
    uri: str | None = None
    for pair in _split_quoted(elements[-1], ";"):
        key, equals, value = pair.partition("=")
        if not equals:
            raise IdentityError(f"x-forwarded-client-cert: {pair.strip()!r} is not key=value")
        if key.strip().lower() == "uri":
            if uri is not None:
                raise IdentityError("x-forwarded-client-cert: more than one URI in one element")
            uri = _unquote(value.strip())
    return uri or None


def _split_quoted(text: str, separator: str) -> list[str]:
    """text split on separator outside double quotes; empty pieces dropped."""
    pieces: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            pieces.append("".join(current))
            current = []
            continue
        current.append(char)
    if quoted:
        raise IdentityError("x-forwarded-client-cert: a quoted value is not closed")
    pieces.append("".join(current))
    return [piece for piece in pieces if piece.strip()]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value
