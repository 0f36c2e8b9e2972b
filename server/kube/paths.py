"""Where the resources k8sailor uses are in the API server's REST API, and how the query
parameters it sends are spelled.

Every namespace and name is checked here, at the boundary, before it becomes part of a path:
percent-quoting leaves "." and ".." alone and the HTTP client resolves them, so a name ".."
would turn DELETE of one Service into a DELETE of the namespace's path, and an empty name
would address the whole collection (a DELETE there deletes every Service). Callers validate
what they take from requests first; a bad name reaching here is a bug, so it is a ValueError.
A collection has its own function, so no name, however empty, reaches the collection path.
"""

from __future__ import annotations

from collections.abc import Callable

from server.kube.transport import Query
from server.rules.names import (
    dns1035_label_problem,
    dns1123_label_problem,
    dns1123_subdomain_problem,
)

__all__ = [
    "SUBJECT_ACCESS_REVIEWS",
    "TOKEN_REVIEWS",
    "deployment",
    "deployments",
    "dry_run",
    "flag",
    "service",
    "services",
]

_CORE = "/api/v1"
_APPS = "/apis/apps/v1"
TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
SUBJECT_ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


def _checked(what: str, value: str, problem: Callable[[str], str | None]) -> str:
    """value, which the check found valid (so it needs no quoting in a path), or ValueError."""
    found = problem(value)
    if found is not None:
        raise ValueError(f"{what} {value[:100]!r} is not valid in an API path: it {found}")
    return value


def _collection(group: str, namespace: str, plural: str) -> str:
    return f"{group}/namespaces/{_checked('namespace', namespace, dns1123_label_problem)}/{plural}"


def services(namespace: str) -> str:
    """The Services of namespace (a DNS-1123 label)."""
    return _collection(_CORE, namespace, "services")


def service(namespace: str, name: str) -> str:
    """The Service name (a DNS-1035 label, as Service names are) of namespace."""
    return f"{services(namespace)}/{_checked('Service name', name, dns1035_label_problem)}"


def deployments(namespace: str | None) -> str:
    """The Deployments of namespace (a DNS-1123 label; None: of all namespaces)."""
    if namespace is None:
        return f"{_APPS}/deployments"
    return _collection(_APPS, namespace, "deployments")


def deployment(namespace: str, name: str) -> str:
    """The Deployment name (a DNS-1123 subdomain, as Deployment names are) of namespace."""
    problem = dns1123_subdomain_problem
    return f"{deployments(namespace)}/{_checked('Deployment name', name, problem)}"


def flag(value: bool) -> str:
    return "true" if value else "false"


def dry_run(dry_run: bool) -> Query:
    return [("dryRun", "All")] if dry_run else []
