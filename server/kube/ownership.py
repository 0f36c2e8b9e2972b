"""Whether a Service read from the cluster is a Deployment's: defined once, here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from server.manifests import MANAGED_BY_LABEL, MANAGED_BY_VALUE, owned_by


def owned(service: Mapping[str, Any], uid: str) -> bool:
    labels = (service.get("metadata") or {}).get("labels") or {}
    return labels.get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE and owned_by(service, uid)
