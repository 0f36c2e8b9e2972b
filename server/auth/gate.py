"""Who is calling and what it may do, for the edge (server.api.edge) and the servicers: the only
part of server.auth that knows gRPC.

The edge (server.api.edge) asks `authenticate(context)` first, before the request is decoded, and
the servicer then `rights(...)` with the verbs and Service types the request needs (create on
each type its rules use, or the verbs of a lifecycle RPC); the answer goes to the domain as a
plain value (server.auth.rights.Grants, which the domain reads as server.domain.rights.Rights).
A caller allowed none of it is refused here (Forbidden), before anything in the cluster is read.

Identity, the first that applies (see the README):
  1. a client certificate verified against --client-ca-file: its SPIFFE ID if it has one,
     else its (last) CN and O values, as kube-apiserver reads it (server.auth.identity);
  2. `authorization: Bearer <token>` metadata over TLS, checked with a TokenReview;
  3. on the --mesh-listen Unix socket only, the SPIFFE URI of x-forwarded-client-cert.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Collection
from typing import Any

import grpc

from server.auth.access import AccessReviewer, permission
from server.auth.errors import AuthError, Forbidden, Unauthenticated
from server.auth.identity import (
    ANONYMOUS,
    Caller,
    IdentityError,
    Method,
    forwarded_client_uri,
    from_certificate,
    from_spiffe_id,
)
from server.auth.rights import Grant, Grants, RightsUnknown
from server.auth.settings import Authorization, AuthSettings
from server.auth.tokens import TokenReviewer
from server.kube import Kube
from server.kube.fairness import Shares
from server.observability.metrics import AUTHENTICATIONS, AUTHORIZATIONS

FORWARDED_CLIENT_CERT = "x-forwarded-client-cert"
# Forwarded headers longer than this are refused before they are parsed (Envoy's element for
# one client is a few hundred bytes, more with Cert= or Chain= which we do not use).
MAX_FORWARDED_BYTES = 16384
# What a caller allowed none of a request is refused with, after its name and "may".
NONE_ALLOWED = "do none of what this request asks"


class AccessControl:
    def __init__(self, kube: Kube, settings: AuthSettings, *, shares: Shares) -> None:
        """shares: the callers' turns for API call slots, the same Shares the edge sets (one
        per caller: a Shares of its own here would give each caller two turns)."""
        self._required = settings.mode is Authorization.RBAC
        self._tls = settings.tls
        self._mutual = settings.client_ca_file is not None
        self._mesh = settings.mesh_listen is not None
        self._trust_domains = settings.spiffe_trust_domains
        self._audiences = settings.token_audiences
        self.tokens = TokenReviewer(kube, settings.token_audiences, max_ttl=settings.token_ttl)
        self.access = AccessReviewer(
            kube, allowed_ttl=settings.allowed_ttl, denied_ttl=settings.denied_ttl, shares=shares
        )

    @property
    def authorizing(self) -> bool:
        """Whether calls are authorized (and so must be authenticated)."""
        return self._required

    async def authenticate(self, context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
        """The caller, or Unauthenticated (only when authorization needs an identity)."""
        try:
            caller = await self._authenticate(context)
        except IdentityError as error:
            AUTHENTICATIONS.labels(Method.NONE.value, "denied").inc()
            raise Unauthenticated(str(error)) from error
        except Unauthenticated:
            AUTHENTICATIONS.labels(Method.NONE.value, "denied").inc()
            raise
        except AuthError:  # the TokenReview could not be made
            AUTHENTICATIONS.labels(Method.TOKEN.value, "error").inc()
            raise
        AUTHENTICATIONS.labels(caller.method.value, "ok").inc()
        return caller

    async def _authenticate(self, context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
        auth = context.auth_context()
        if not self._required:
            # Nothing is decided by identity: name the caller in the log if it is easy.
            try:
                pems = list(auth.get("x509_pem_cert", ()))
                caller = _certificate_caller(pems[0], self._trust_domains) if pems else None
                return caller or ANONYMOUS
            except IdentityError:
                return ANONYMOUS
        for pem in list(auth.get("x509_pem_cert", ()))[:1]:
            caller = _certificate_caller(pem, self._trust_domains)
            if caller is not None:
                return caller
        metadata = context.invocation_metadata() or ()
        tokens = [_text(value) for key, value in metadata if key == "authorization"]
        encrypted = _tls(auth)
        if len(tokens) > 1:
            raise Unauthenticated("more than one authorization header: send exactly one")
        if tokens and encrypted:
            scheme, _, token = tokens[0].partition(" ")
            if scheme.lower() != "bearer":
                # Not a word of what was sent: without a scheme, what was sent is the
                # credential itself, and this message reaches the log and the span.
                raise Unauthenticated(
                    "authorization metadata must be 'Bearer <token>' (the scheme Bearer, a "
                    "space, then the token); what was sent has another scheme or none"
                )
            return await self.tokens.review(token.strip(), context.peer())
        from_mesh = self._mesh and _is_mesh_peer(context.peer())
        if from_mesh:
            forwarded = [_text(value) for key, value in metadata if key == FORWARDED_CLIENT_CERT]
            if forwarded:
                return _forwarded_caller(",".join(forwarded), self._trust_domains)
        raise Unauthenticated(
            self._expected(token_refused=bool(tokens) and not encrypted, from_mesh=from_mesh)
        )

    def _expected(self, *, token_refused: bool, from_mesh: bool) -> str:
        """What this listener would have believed: the header on the mesh socket, a
        certificate or token on TLS, and on a plaintext TCP port nothing at all."""
        ways = []
        if from_mesh:
            ways.append("an x-forwarded-client-cert header (the mesh sidecar's)")
        else:
            if self._mutual:
                ways.append("a client certificate from the client CA (a SPIFFE ID, or CN and O)")
            if self._tls:
                audiences = ", ".join(self._audiences)
                ways.append(
                    f"'authorization: Bearer <token>' metadata with a Kubernetes token for "
                    f"audience {audiences}"
                )
        if ways:
            message = "this server needs to know who is calling: send " + ", or ".join(ways)
        else:
            message = (
                "this server needs to know who is calling, and this port (plaintext) cannot "
                "tell: call it through the mesh"
            )
        if token_refused:
            message += "; a bearer token was sent over plaintext and ignored (TLS only)"
        return message

    async def rights(
        self,
        caller: Caller,
        namespace: str,
        deployment: str,
        wanted: Collection[Grant],
        *,
        none_allowed: str = NONE_ALLOWED,
    ) -> Grants | None:
        """What the caller may do of wanted (verb and Service type pairs: create's are
        ("create", type) for each type its rules use); None when authorization is off. The
        answer can ask more pairs later (Grants.ask), through the same cache.

        Raises Forbidden when the caller may do none of it (its message: the caller "may",
        none_allowed, then what it needs), and AuthUnavailable when the API server could not
        be asked. Nothing wanted (a request with no rule that parses) asks nothing and counts
        no decision.
        """
        if not self._required:
            return None
        ask = functools.partial(self._ask, caller, namespace, deployment)
        if not wanted:
            return Grants(denied={}, decided=frozenset(), ask=ask)
        try:
            denied = await self._denials(caller, namespace, deployment, wanted)
        except AuthError:
            AUTHORIZATIONS.labels("error").inc()
            raise
        pairs = set(wanted)
        if len(denied) == len(pairs):
            AUTHORIZATIONS.labels("denied").inc()
            needed = sorted(permission(t, namespace, deployment, v) for v, t in pairs)
            raise Forbidden(
                f"{caller.user} may {none_allowed}: it needs "
                + ("one of " if len(needed) > 1 else "")
                + "; ".join(needed)
            )
        AUTHORIZATIONS.labels("partly_denied" if denied else "allowed").inc()
        return Grants(denied=denied, decided=frozenset(pairs), ask=ask)

    async def _ask(
        self, caller: Caller, namespace: str, deployment: str, wanted: Collection[Grant]
    ) -> dict[Grant, str]:
        try:
            return await self._denials(caller, namespace, deployment, wanted)
        except AuthError as error:
            raise RightsUnknown(str(error)) from error

    async def _denials(
        self, caller: Caller, namespace: str, deployment: str, wanted: Collection[Grant]
    ) -> dict[Grant, str]:
        """The permission the caller lacks, in words, for each pair of wanted it may not do."""
        verbs = sorted({verb for verb, _ in wanted})
        by_verb = await asyncio.gather(
            *(
                self.access.decide(
                    caller, namespace, deployment, {t for v, t in wanted if v == verb}, verb
                )
                for verb in verbs
            )
        )
        return {
            (verb, type_): f"{caller.user} may not {permission(type_, namespace, deployment, verb)}"
            for verb, decisions in zip(verbs, by_verb, strict=True)
            for type_, decision in decisions.items()
            if not decision.allowed
        }


@functools.lru_cache(maxsize=1024)
def _certificate_caller(pem: bytes, trust_domains: tuple[str, ...]) -> Caller | None:
    """Parsing a certificate costs more than a whole cached authorization: callers reuse
    theirs across calls, so remember the last few hundred (refusals are not remembered)."""
    return from_certificate(pem, trust_domains)


def _forwarded_caller(header: str, trust_domains: tuple[str, ...]) -> Caller:
    """The caller the sidecar's header names; IdentityError or Unauthenticated if none."""
    if len(header) > MAX_FORWARDED_BYTES:
        raise Unauthenticated(
            f"x-forwarded-client-cert is {len(header)} bytes, more than {MAX_FORWARDED_BYTES}"
        )
    uri = forwarded_client_uri(header)
    if uri is None:
        raise Unauthenticated(
            "x-forwarded-client-cert names no client URI: the sidecar verified no client "
            "certificate with a SPIFFE ID (spiffe://<trust-domain>/ns/<namespace>/sa/<name>)"
        )
    return from_spiffe_id(uri, Method.FORWARDED, trust_domains)


def _tls(auth: dict[str, list[bytes]] | Any) -> bool:
    return b"ssl" in auth.get("transport_security_type", ())


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _is_mesh_peer(peer: str) -> bool:
    """Whether a call came in over a Unix socket: gRPC names such a peer "unix:" and then the
    client's address (empty for the unbound client sockets Envoy uses), and TCP peers always
    "ipv4:" or "ipv6:". The server's only Unix socket is --mesh-listen (--listen is refused
    unless HOST:PORT with a host that is no socket path: server.config.host_port), so this is
    the mesh listener, and nothing that reaches a TCP port can pass.
    """
    return peer.startswith("unix:")
