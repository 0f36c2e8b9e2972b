"""Who is calling, as Kubernetes names users: pure parsing of certificates and XFCC headers.

A caller is a user name and its groups, exactly what a SubjectAccessReview asks about. A client
certificate is read as kube-apiserver's x509 authenticator reads it, so that a RoleBinding
means the same thing to k8sailor as to the cluster: the user is the subject's CommonName, and
where the subject has several CN attributes that is the LAST one (Go's crypto/x509 keeps
overwriting Subject.CommonName as it walks the RDN sequence); the groups are its Organization
values, in order. Every authenticated caller is also in ``system:authenticated``, as the API
server's own authenticator adds it.

kube-apiserver knows no SPIFFE IDs; meshes (Istio, SPIRE, cert-manager's csi-driver-spiffe)
name workloads with them instead of a subject. A SPIFFE ID of the Kubernetes shape
(``spiffe://<trust-domain>/ns/<ns>/sa/<sa>``) from a trust domain this server was told to
believe (--spiffe-trust-domain) is that namespace's ServiceAccount. The two never mix, so that
neither can quietly stand in for the other:

- a certificate with a ``spiffe:`` URI SAN is read by that SAN alone: a trusted Kubernetes
  SPIFFE ID is the ServiceAccount (its subject is not read), anything else there (another trust
  domain, another shape, two SPIFFE IDs) is refused, never passed on to the CN;
- a certificate without one is read by its subject, as kube-apiserver reads it.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Mapping
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


DEFAULT_TRUST_DOMAIN = "cluster.local"  # Istio's default, and Kubernetes' default cluster domain

# A Kubernetes SPIFFE ID's path; the names in it are checked as Kubernetes names below.
_SPIFFE_PATH = re.compile(r"/ns/([^/]+)/sa/([^/]+)")
# The SPIFFE ID standard's trust domain name: lowercase letters, digits, ".", "-" and "_".
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
_SPIFFE_SCHEME = "spiffe://"


def trust_domain_problem(name: str) -> str | None:
    """Why name cannot be a SPIFFE trust domain, or None."""
    if not name:
        return "a trust domain is empty"
    if not _TRUST_DOMAIN.fullmatch(name):
        return (
            f"{name!r} is not a SPIFFE trust domain name (lowercase letters, digits, '.', '-' "
            "and '_' only, e.g. cluster.local)"
        )
    return None


def is_spiffe_uri(uri: str) -> bool:
    """Whether uri claims to be a SPIFFE ID: its scheme is spiffe, in any case (an ID of the
    wrong case is then refused as malformed rather than read as some other kind of URI)."""
    return uri[:7].lower() == "spiffe:"


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


def from_spiffe_id(uri: str, method: Method, trust_domains: Collection[str]) -> Caller:
    """The ServiceAccount a SPIFFE ID names, or IdentityError saying why it names none.

    Only IDs from trust_domains are believed: a mesh's CA vouches for the IDs of its own trust
    domain, and one that also signs for another (federation, a shared root) must not make
    that domain's workloads ServiceAccounts of this cluster.
    """
    if not uri.startswith(_SPIFFE_SCHEME):
        raise IdentityError(f"{uri!r} is not a SPIFFE ID: it must start with {_SPIFFE_SCHEME}")
    domain, slash, path = uri[len(_SPIFFE_SCHEME) :].partition("/")
    problem = trust_domain_problem(domain)
    if problem is not None:
        raise IdentityError(f"SPIFFE ID {uri!r}: {problem}")
    if domain not in trust_domains:
        raise IdentityError(
            f"SPIFFE ID {uri!r} is from trust domain {domain!r}, which this server does not "
            f"believe (it believes {', '.join(sorted(trust_domains))}: --spiffe-trust-domain)"
        )
    match = _SPIFFE_PATH.fullmatch(slash + path)
    if match is None:
        raise IdentityError(
            f"SPIFFE ID {uri!r} names no Kubernetes ServiceAccount: the path must be "
            "/ns/<namespace>/sa/<name>"
        )
    namespace, name = match.groups()
    problem = dns1123_label_problem(namespace)
    if problem is not None:
        raise IdentityError(f"SPIFFE ID {uri!r}: namespace {namespace!r} {problem}")
    problem = dns1123_subdomain_problem(name)
    if problem is not None:
        raise IdentityError(f"SPIFFE ID {uri!r}: service account {name!r} {problem}")
    return service_account(namespace, name, method)


def from_certificate(pem: bytes, trust_domains: Collection[str]) -> Caller | None:
    """The caller a verified client certificate names, or None when it names nobody (no
    SPIFFE ID, and no CN: kube-apiserver then goes on to the next authenticator too).

    The TLS layer has already checked the chain against --client-ca-file; this only reads it.
    Raises IdentityError for a SPIFFE ID that is not believed (see the module docstring).
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
    spiffe = [uri for uri in uris if is_spiffe_uri(uri)]
    if len(spiffe) > 1:
        raise IdentityError(
            f"the client certificate carries {len(spiffe)} SPIFFE IDs ({', '.join(spiffe)}); "
            "an SVID has exactly one"
        )
    if spiffe:
        return from_spiffe_id(spiffe[0], Method.SPIFFE, trust_domains)
    names = [
        _text(value.value)
        for value in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ]
    # The last CN, as Go's pkix.Name.FillFromRDNSequence leaves Subject.CommonName; an empty
    # one names nobody, as in kube-apiserver's CommonNameUserConversion.
    if not names or not names[-1]:
        return None
    organizations = [
        _text(value.value)
        for value in certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    ]
    # Kubernetes reserves the system: prefix for its own users and groups (system:masters
    # bypasses RBAC in every SubjectAccessReview). --client-ca-file may be an issuer that is
    # easier to get certificates from than kube-apiserver's own client CA, so a certificate
    # subject may not claim one; ServiceAccounts prove themselves with a SPIFFE ID or a token.
    for attribute, value in [("CN", names[-1]), *(("O", o) for o in organizations)]:
        if value.startswith(RESERVED_PREFIX):
            raise IdentityError(
                f"client certificate {attribute}={value!r}: names beginning with "
                f"{RESERVED_PREFIX!r} are reserved for Kubernetes and not accepted from a "
                "certificate subject; a ServiceAccount authenticates with a SPIFFE ID "
                "(spiffe://<trust domain>/ns/<namespace>/sa/<name>) or a token"
            )
    groups = tuple(dict.fromkeys([*organizations, AUTHENTICATED_GROUP]))
    return Caller(user=names[-1], groups=groups, method=Method.CERTIFICATE)


RESERVED_PREFIX = "system:"


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
