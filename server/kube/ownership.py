"""Whether a Service read from the cluster is a Deployment's (ownership, defined once), and
whether it already is the Service a rule would make (same_service: the owner included).

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


def same_service(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """True when a Service read from the apiserver already is the one we would create.

    Compares what a rule decides: type, selector, headlessness, externalName, the ports (port,
    targetPort, protocol, name, appProtocol, and nodePort only where we asked for a specific
    one) and the owner. Ignores what the apiserver fills in (clusterIP, allocated node ports,
    sessionAffinity, ipFamilies, internalTrafficPolicy, ...).
    """
    e_spec: Mapping[str, Any] = existing.get("spec") or {}
    d_spec: Mapping[str, Any] = desired.get("spec") or {}
    if (e_spec.get("type") or "ClusterIP") != (d_spec.get("type") or "ClusterIP"):
        return False
    if (e_spec.get("selector") or {}) != (d_spec.get("selector") or {}):
        return False
    if (e_spec.get("clusterIP") == "None") != (d_spec.get("clusterIP") == "None"):
        return False
    if (e_spec.get("externalName") or None) != (d_spec.get("externalName") or None):
        return False
    e_ports = e_spec.get("ports") or []
    d_ports = d_spec.get("ports") or []
    if len(e_ports) != len(d_ports):
        return False
    for e, d in zip(e_ports, d_ports, strict=True):
        if e.get("port") != d.get("port"):
            return False
        # The apiserver defaults an absent targetPort to the port, and the protocol to TCP.
        if e.get("targetPort", e.get("port")) != d.get("targetPort", d.get("port")):
            return False
        if (e.get("protocol") or "TCP") != (d.get("protocol") or "TCP"):
            return False
        if (e.get("name") or "") != (d.get("name") or ""):
            return False
        if e.get("appProtocol") != d.get("appProtocol"):
            return False
        node_port = d.get("nodePort")
        if node_port is not None and e.get("nodePort") != node_port:
            return False
    d_meta = desired.get("metadata") or {}
    return all(
        owned_by(existing, str(ref.get("uid")))
        for ref in d_meta.get("ownerReferences") or ()
        if isinstance(ref, Mapping)
    )
