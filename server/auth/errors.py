"""Why a call was not let in: each maps to one gRPC status in server.auth.gate."""

from __future__ import annotations


class AuthError(Exception):
    """A call that authentication or authorization stopped; the message is for the caller."""


class Unauthenticated(AuthError):
    """The call proved no identity, or one the API server refused (UNAUTHENTICATED)."""


class Forbidden(AuthError):
    """The caller may do none of what the request asks (PERMISSION_DENIED)."""


class AuthUnavailable(AuthError):
    """The API server could not be asked (UNAVAILABLE): nothing was decided."""
