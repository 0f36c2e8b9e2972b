"""k8sailor's own errors for what the Kubernetes API server (or the way to it) said.

The rest of the server never sees aiohttp's errors or an answer's raw status: they are
translated here, in one place, into a small hierarchy keyed by what the caller should do
about them. Everything else read from an answer is read here too, once, into the errors'
attributes: whether a failed call may have taken effect (`may_have_applied`), which field
managers a server-side apply conflict names (`KubeConflict.managers`), whether validation
refused a change to an immutable field (`KubeInvalid.immutable`), a watch's 410 (`KubeGone`),
and what an answer's status says of the API server's load (`load_signal`).

The API server's whole metav1.Status is kept (reason, message, the causes with their field
paths, retryAfterSeconds), as kopf's client errors keep it, so that a person reading a result
sees what the cluster said, the retry logic sees when it may ask again, and the domain flows can
point a refused field at the rule's own text.
"""

from __future__ import annotations

import asyncio
import email.utils
import enum
import json
import re
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

# A Retry-After beyond this is not a hint to wait but a refusal: no caller waits an hour.
_MAX_RETRY_AFTER_S = 600.0


@dataclass(frozen=True, slots=True)
class Cause:
    """One entry of a Status's details.causes: which field was refused, and why."""

    field: str  # the API field path, as in "spec.ports[0].nodePort"; "" when none was named
    reason: str  # "FieldValueInvalid", "FieldValueDuplicate", ...
    message: str


@dataclass(frozen=True, slots=True)
class ApiStatus:
    """The metav1.Status that came with a failed answer, or what could be read of it."""

    code: int | None = None
    reason: str = ""
    message: str = ""
    name: str = ""  # details.name: the object the failure is about
    kind: str = ""  # details.kind
    causes: tuple[Cause, ...] = ()
    # Seconds to wait before asking again: details.retryAfterSeconds, else the Retry-After
    # header (the API server's own 429 sends only the header, with a plain-text body).
    retry_after: float | None = None


class KubeError(Exception):
    """Something the API server refused or could not do.

    status is the HTTP status (None when no response arrived), reason the API server's
    machine-readable reason ("Invalid", "AlreadyExists", "Forbidden", ...), message its text,
    api_status the whole Status it sent.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reason: str = "",
        api_status: ApiStatus | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason
        self.api_status = api_status or ApiStatus(code=status, reason=reason, message=message)
        # Set by Kube when an earlier attempt of the same call went unanswered (the connection
        # dropped or timed out after the request was sent), so it may have taken effect: a
        # 404 on a delete, or a 409 on a create, may then be the call's own doing.
        self.unanswered_before = False
        # This attempt got no answer, yet its request may have reached the API server (see
        # from_transport): set only for failures of the way there.
        self.may_have_applied = False

    @property
    def causes(self) -> tuple[Cause, ...]:
        return self.api_status.causes

    @property
    def retry_after(self) -> float | None:
        return self.api_status.retry_after


class KubeNotFound(KubeError):
    """404: the object, or its namespace, does not exist."""


class KubeForbidden(KubeError):
    """403: our identity may not do this."""


class KubeAlreadyExists(KubeError):
    """409 AlreadyExists: an object of that name is there already."""


class KubeConflict(KubeError):
    """409 for any other reason, such as a stale resourceVersion, or a server-side apply
    whose fields other field managers own: `managers` names them (empty for any other
    conflict), read from the message unless given."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reason: str = "",
        api_status: ApiStatus | None = None,
        managers: Sequence[str] | None = None,
    ) -> None:
        super().__init__(message, status=status, reason=reason, api_status=api_status)
        self.managers: tuple[str, ...] = (
            tuple(managers) if managers is not None else tuple(conflicting_managers(message))
        )


class KubeInvalid(KubeError):
    """400 or 422: the API server's validation refused the object. `immutable` when what it
    refused is a change to a field that cannot change once set (read from the message unless
    given): only deleting the object and making it anew can make that change."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reason: str = "",
        api_status: ApiStatus | None = None,
        immutable: bool | None = None,
    ) -> None:
        super().__init__(message, status=status, reason=reason, api_status=api_status)
        self.immutable: bool = immutable if immutable is not None else _is_immutable(message)


class KubeGone(KubeError):
    """410: the resourceVersion a list or watch asked to resume from is too old; list again."""


class KubeUnavailable(KubeError):
    """No answer, a dropped connection, 429, 503 or 504: worth trying again later."""


class KubeUnauthorized(KubeUnavailable):
    """401: the API server did not accept k8sailor's own credentials.

    Unavailable rather than forbidden: it says nothing about the caller, whose request may
    well be allowed once k8sailor's credentials are fixed (or reloaded).
    """


class KubeServerError(KubeError):
    """Any other 5xx, or an answer we could not read."""


_BY_STATUS: dict[int, type[KubeError]] = {
    400: KubeInvalid,
    401: KubeUnauthorized,
    403: KubeForbidden,
    404: KubeNotFound,
    410: KubeGone,
    422: KubeInvalid,
    429: KubeUnavailable,
    503: KubeUnavailable,
    504: KubeUnavailable,
}

# metav1's reasons, for answers that came without a Status (the API server's own 429 is plain
# text), so that callers and metrics see the same reason either way.
_REASON_BY_STATUS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}

# Statuses that mean "not now" whatever the body says; any other 5xx is retried only when the
# API server says when (client-go does the same).
_TRANSIENT_STATUSES = frozenset({429, 503, 504})


def is_transient(error: KubeError) -> bool:
    """True when the same call may well succeed if sent again after a pause."""
    if isinstance(error, KubeUnauthorized):
        return False  # only new credentials help: see Kube's reload
    if error.status is None:
        return error.reason in ("Unreachable", "Timeout")
    if error.status in _TRANSIENT_STATUSES:
        return True
    return error.status >= 500 and error.retry_after is not None


def from_response(
    status: int, body: bytes | str | None, headers: Mapping[str, str] | None = None
) -> KubeError:
    """The error for a non-2xx answer, from the metav1.Status the API server sends with it."""
    payload: dict[str, Any] = {}
    if body:
        try:
            decoded = json.loads(body)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            payload = decoded
    reason = _text(payload.get("reason")) or _REASON_BY_STATUS.get(status, "")
    message = _text(payload.get("message")).strip()
    if not message:
        text = body.decode(errors="replace") if isinstance(body, bytes) else (body or "")
        message = f"HTTP {status}: {text.strip()[:500]}" if text.strip() else f"HTTP {status}"
    details = payload.get("details")
    details = details if isinstance(details, dict) else {}
    api_status = ApiStatus(
        code=status,
        reason=reason,
        message=message,
        name=_text(details.get("name")),
        kind=_text(details.get("kind")),
        causes=_causes(details.get("causes")),
        retry_after=_retry_after(details.get("retryAfterSeconds"), headers),
    )
    if status == 401:
        message = f"the API server refused k8sailor's own credentials: {message}"
    if status == 409:
        kind: type[KubeError] = KubeAlreadyExists if reason == "AlreadyExists" else KubeConflict
    else:
        kind = _BY_STATUS.get(status, KubeServerError if status >= 500 else KubeError)
    return kind(message, status=status, reason=reason, api_status=api_status)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _causes(raw: Any) -> tuple[Cause, ...]:
    if not isinstance(raw, list):
        return ()
    return tuple(
        Cause(_text(cause.get("field")), _text(cause.get("reason")), _text(cause.get("message")))
        for cause in raw[:100]  # bounded: a Status lists one cause per refused field
        if isinstance(cause, dict)
    )


def _retry_after(seconds: Any, headers: Mapping[str, str] | None) -> float | None:
    """details.retryAfterSeconds, else the Retry-After header (seconds or an HTTP date)."""
    if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds > 0:
        return min(float(seconds), _MAX_RETRY_AFTER_S)
    header = (headers or {}).get("Retry-After", "").strip()
    if not header:
        return None
    try:
        value = float(header)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError):
            return None
        value = when.timestamp() - time.time()
    if value != value:  # NaN
        return None
    return min(max(value, 0.0), _MAX_RETRY_AFTER_S)


def from_transport(error: BaseException) -> KubeUnavailable:
    """A connection that failed, dropped or timed out before an answer arrived.

    may_have_applied is decided here, once: any such failure but one to connect at all may
    have come after the request reached the API server (the connection dropped, or the answer
    was late), so the call may have done its work though no answer says so.
    """
    failure = _transport_failure(error)
    failure.may_have_applied = not isinstance(
        error, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError
    )
    return failure


def _transport_failure(error: BaseException) -> KubeUnavailable:
    if isinstance(error, asyncio.TimeoutError | TimeoutError):
        return KubeUnavailable("API server did not answer in time", reason="Timeout")
    detail = str(error) or type(error).__name__
    if isinstance(error, aiohttp.ClientSSLError | ssl.SSLError):
        # A certificate problem does not go away by asking again.
        return KubeUnavailable(f"TLS with the API server failed: {detail}", reason="TLSFailed")
    return KubeUnavailable(f"API server unreachable: {detail}", reason="Unreachable")


def from_watch_error(status: Mapping[str, Any]) -> KubeError:
    """The error for a watch's ERROR event, whose object is a metav1.Status: KubeGone for a
    410 (the watch cannot resume from where it was), else what the Status says."""
    message = status.get("message") or status
    if status.get("code") == 410:
        return KubeGone(f"the watch expired: {message}", status=410, reason="Gone")
    return KubeError(f"the watch ended with an error: {message}")


class LoadSignal(enum.Enum):
    """What an answer says about how loaded the API server is, for the adaptive limit."""

    THROTTLED = "throttled"  # 429, 503: it had too much
    MEASURED = "measured"  # it worked on the call: the latency measures its load
    NONE = "none"  # no answer, or a 5xx: says nothing about load


def load_signal(status: int | None) -> LoadSignal:
    """Only answers the API server worked on measure its load (a 429 or 503 says it had too
    much; failed connections, timeouts and other 5xx say nothing about load)."""
    if status in (429, 503):
        return LoadSignal.THROTTLED
    if status is not None and 200 <= status < 500:
        return LoadSignal.MEASURED
    return LoadSignal.NONE


def _is_immutable(message: str) -> bool:
    return "immutable" in message or "may not change once set" in message


_CONFLICT_MANAGER = re.compile(r'conflicts? with "([^"]+)"')


def conflicting_managers(message: str) -> list[str]:
    """The field managers a server-side apply conflict names, in order, each once.

    The API server lists them only in its message, as 'conflict with "kubectl-edit" using v1'.
    """
    return list(dict.fromkeys(_CONFLICT_MANAGER.findall(message)))


def failure_reason(error: KubeError) -> str:
    """What went wrong, in words that name nothing of the cluster: the API server's reason
    ("Unreachable", "Forbidden", "TooManyRequests") or its HTTP status, for callers who have
    not proved enough to hear its message, which may name its address or k8sailor's identity."""
    if error.reason:
        return error.reason
    return f"HTTP {error.status}" if error.status is not None else "no answer"
