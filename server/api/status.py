"""The gRPC status for a request-level failure: the one table from our errors to status codes.

The domain raises its own RequestErrors (it has read every Kubernetes answer already) and auth
its AuthErrors (the caller's identity and rights, which the edge also maps before a request is
decoded). Anything else is a bug of ours."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import grpc

from server.auth.errors import AuthError, AuthUnavailable, Forbidden, Unauthenticated
from server.domain.errors import (
    BadRequest,
    ClusterFailed,
    ClusterForbidden,
    ClusterUnavailable,
    DeploymentNotFound,
    DeploymentUnusable,
    NotPermitted,
    RequestError,
)


@dataclass(frozen=True, slots=True)
class Status:
    """How a call ended, as the caller sees it."""

    code: grpc.StatusCode
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.code is grpc.StatusCode.OK


OK: Final = Status(grpc.StatusCode.OK)
CANCELLED: Final = Status(grpc.StatusCode.CANCELLED, "the caller went away")

# First match wins: a subclass before its base.
_CODES: Final[tuple[tuple[type[RequestError | AuthError], grpc.StatusCode], ...]] = (
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (Forbidden, grpc.StatusCode.PERMISSION_DENIED),  # the caller may not (authorization)
    (AuthUnavailable, grpc.StatusCode.UNAVAILABLE),  # the reviews could not answer
    (BadRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (DeploymentNotFound, grpc.StatusCode.NOT_FOUND),
    (DeploymentUnusable, grpc.StatusCode.FAILED_PRECONDITION),
    (NotPermitted, grpc.StatusCode.PERMISSION_DENIED),  # the caller may not (lifecycle RPCs)
    (ClusterForbidden, grpc.StatusCode.PERMISSION_DENIED),  # k8sailor itself may not
    (ClusterUnavailable, grpc.StatusCode.UNAVAILABLE),
    (ClusterFailed, grpc.StatusCode.INTERNAL),
)

#: What status_for can map; any other exception is a bug (internal_error). No Kubernetes
#: error is among them: the domain has read those already, into its RequestErrors.
EXPECTED: Final = (RequestError, AuthError)


def status_for(error: RequestError | AuthError) -> Status:
    """The status for a request-level failure, its message the error's own sentence: for the
    servicers, and for the edge when authentication fails before a request is read."""
    for kind, code in _CODES:
        if isinstance(error, kind):
            return Status(code, str(error))
    return Status(grpc.StatusCode.INTERNAL, str(error))


def internal_error(error: BaseException) -> Status:
    """A bug of ours, in one sentence (the log has the traceback)."""
    return Status(grpc.StatusCode.INTERNAL, f"internal error: {error}")
