"""k8sailor's own errors for what the Kubernetes API server (or the way to it) said.

The rest of the server never sees kubernetes_asyncio's ApiException or aiohttp's errors: they
are translated here, in one place, into a small hierarchy keyed by what the caller should do
about them, and the API server's own reason and message are kept so a person reading a result
sees what the cluster said, not our paraphrase of it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException


class KubeError(Exception):
    """Something the API server refused or could not do.

    status is the HTTP status (None when no response arrived), reason the API server's
    machine-readable reason ("Invalid", "AlreadyExists", "Forbidden", ...), message its text.
    """

    def __init__(self, message: str, *, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason


class KubeNotFound(KubeError):
    """404: the object, or its namespace, does not exist."""


class KubeForbidden(KubeError):
    """401 or 403: our identity may not do this."""


class KubeAlreadyExists(KubeError):
    """409 AlreadyExists: an object of that name is there already."""


class KubeConflict(KubeError):
    """409 for any other reason, such as a stale resourceVersion."""


class KubeInvalid(KubeError):
    """400 or 422: the API server's validation refused the object."""


class KubeUnavailable(KubeError):
    """No answer, a dropped connection, 429, 503 or 504: worth trying again later."""


class KubeServerError(KubeError):
    """Any other 5xx, or an answer we could not read."""


_BY_STATUS: dict[int, type[KubeError]] = {
    400: KubeInvalid,
    401: KubeForbidden,
    403: KubeForbidden,
    404: KubeNotFound,
    422: KubeInvalid,
    429: KubeUnavailable,
    503: KubeUnavailable,
    504: KubeUnavailable,
}


def from_response(status: int, body: bytes | str | None) -> KubeError:
    """The error for a non-2xx answer, from the metav1.Status the API server sends with it."""
    payload: dict[str, Any] = {}
    if body:
        try:
            decoded = json.loads(body)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            payload = decoded
    reason = str(payload.get("reason") or "")
    message = str(payload.get("message") or "").strip()
    if not message:
        text = body.decode(errors="replace") if isinstance(body, bytes) else (body or "")
        message = f"HTTP {status}: {text.strip()[:500]}" if text.strip() else f"HTTP {status}"
    if status == 409:
        kind: type[KubeError] = KubeAlreadyExists if reason == "AlreadyExists" else KubeConflict
    else:
        kind = _BY_STATUS.get(status, KubeServerError if status >= 500 else KubeError)
    return kind(message, status=status, reason=reason)


def from_api_exception(error: ApiException) -> KubeError:
    """kubernetes_asyncio raises ApiException with status 0 for requests it could not send."""
    status = int(error.status or 0)
    if status == 0:
        return KubeUnavailable(f"API server unreachable: {error.reason}", reason="Unreachable")
    return from_response(status, error.body)


def from_transport(error: BaseException) -> KubeUnavailable:
    """A connection that failed, dropped or timed out before an answer arrived."""
    if isinstance(error, asyncio.TimeoutError | TimeoutError):
        return KubeUnavailable("API server did not answer in time", reason="Timeout")
    detail = str(error) or type(error).__name__
    return KubeUnavailable(f"API server unreachable: {detail}", reason="Unreachable")
