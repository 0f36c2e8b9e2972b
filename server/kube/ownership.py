"""Whether a Service read from the cluster is a Deployment's: ownership, defined once.

A Service is the Deployment's when it carries both marks k8sailor sets on every Service it
makes: the managed-by label (what ListServices selects on, so what is listed, deleted, applied
and pruned is one set) and an ownerReference to the Deployment's current uid (what the garbage
collector follows, so a Deployment made anew under the same name owns none of the old one's).
A Service that lost either mark is someone else's to k8sailor, whichever flow meets it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from server.manifests import MANAGED_BY_LABEL, MANAGED_BY_VALUE


def owned_by(service: Mapping[str, Any], deployment_uid: str) -> bool:
    """True when the Service, as the API server answered it, is the Deployment's of this uid."""
    meta = service.get("metadata") or {}
    labels = meta.get("labels") or {}
    if labels.get(MANAGED_BY_LABEL) != MANAGED_BY_VALUE:
        return False
    return any(
        isinstance(ref, Mapping) and ref.get("uid") == deployment_uid
        for ref in meta.get("ownerReferences") or ()
    )
