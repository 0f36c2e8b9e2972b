"""Why a request as a whole cannot be served: the domain's own errors, so that the layers
above (server.api maps them to status codes) never need to know Kubernetes' error kinds."""

from __future__ import annotations

from server.kube.errors import KubeError, KubeForbidden, KubeUnavailable


class RequestError(Exception):
    """The request as a whole cannot be served; no rule was attempted."""


class BadRequest(RequestError):
    """Empty, oversized, or naming an impossible namespace or Deployment."""


class DeploymentNotFound(RequestError):
    pass


class DeploymentUnusable(RequestError):
    """The Deployment exists but cannot be exposed (e.g. a selector without matchLabels)."""


class NotPermitted(RequestError):
    """The caller may not see all of what the request is about (PERMISSION_DENIED)."""


class ClusterForbidden(RequestError):
    """The API server (403) does not let k8sailor itself do what the request needs."""


class ClusterUnavailable(RequestError):
    """The API server could not be reached, kept throttling, or refused k8sailor's own
    credentials, for as long as the caller's deadline allowed retrying."""


class ClusterFailed(RequestError):
    """The API server failed in any other way."""


def request_error(error: KubeError, doing: str = "") -> RequestError:
    """A request-level Kubernetes failure as the domain's own error. doing says what was being
    done, if known."""
    if isinstance(error, KubeForbidden):
        during = f" {doing}" if doing else ""
        return ClusterForbidden(f"the API server refused k8sailor{during}: {error.message}")
    if isinstance(error, KubeUnavailable):
        return ClusterUnavailable(f"{doing}: {error.message}" if doing else error.message)
    during = f" {doing}" if doing else ""
    return ClusterFailed(f"the API server failed{during}: {error.message}")
