"""Where the resources k8sailor uses are in the API server's REST API, and how the query
parameters it sends are spelled."""

from __future__ import annotations

import urllib.parse

from server.kube.transport import Query

__all__ = [
    "SUBJECT_ACCESS_REVIEWS",
    "TOKEN_REVIEWS",
    "deployments",
    "dry_run",
    "flag",
    "services",
]

_CORE = "/api/v1"
_APPS = "/apis/apps/v1"
TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
SUBJECT_ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


def _in(group: str, namespace: str, plural: str, name: str) -> str:
    path = f"{group}/namespaces/{urllib.parse.quote(namespace, safe='')}/{plural}"
    return f"{path}/{urllib.parse.quote(name, safe='')}" if name else path


def services(namespace: str, name: str = "") -> str:
    """The Services of namespace, or the one named."""
    return _in(_CORE, namespace, "services", name)


def deployments(namespace: str | None, name: str = "") -> str:
    """The Deployments of namespace (None: of all namespaces), or the one named."""
    if namespace is None:
        return f"{_APPS}/deployments"
    return _in(_APPS, namespace, "deployments", name)


def flag(value: bool) -> str:
    return "true" if value else "false"


def dry_run(dry_run: bool) -> Query:
    return [("dryRun", "All")] if dry_run else []
