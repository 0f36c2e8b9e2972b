"""server.domain.errors.request_error: a Kubernetes failure as the domain's own error, with the
sentence the caller reads (server.api.status maps the error to its code)."""

from __future__ import annotations

import pytest

from server.domain.errors import (
    ClusterFailed,
    ClusterForbidden,
    ClusterUnavailable,
    RequestError,
    request_error,
)
from server.kube.errors import KubeError, KubeForbidden, KubeUnavailable

REFUSED = "the API server refused k8sailor: no"


@pytest.mark.parametrize(
    ("error", "kind", "message"),
    [
        (KubeForbidden("no"), ClusterForbidden, REFUSED),
        (KubeUnavailable("refused"), ClusterUnavailable, "refused"),
        (KubeError("boom", status=500), ClusterFailed, "the API server failed: boom"),
    ],
)  # fmt: skip
def test_a_kubernetes_failure_is_the_domains_error_with_its_sentence(
    error: KubeError, kind: type[RequestError], message: str
) -> None:
    read = request_error(error)
    assert type(read) is kind
    assert str(read) == message


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (KubeForbidden("no"), 'the API server refused k8sailor reading Deployment "web": no'),
        (KubeUnavailable("refused"), 'reading Deployment "web": refused'),
        (KubeError("boom", status=500), 'the API server failed reading Deployment "web": boom'),
    ],
)  # fmt: skip
def test_what_was_being_done_is_in_the_sentence(error: KubeError, message: str) -> None:
    assert str(request_error(error, 'reading Deployment "web"')) == message
