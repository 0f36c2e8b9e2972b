"""A Service as the API server answers it (or as server.manifests builds it, the same shape),
read here and nowhere else: its name, type, cluster IP, ports and rule annotation as plain
values; whether it is a Deployment's (ownership, defined once); and whether it already is the
Service a rule would make (same_service: the owner included).

A Service is the Deployment's when it carries both marks k8sailor sets on every Service it
makes: the managed-by label (what ListServices selects on, so what is listed, deleted, applied
and pruned is one set) and an ownerReference to the Deployment's current uid (what the garbage
collector follows, so a Deployment made anew under the same name owns none of the old one's).
A Service that lost either mark is someone else's to k8sailor, whichever flow meets it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from server.manifests import MANAGED_BY_LABEL, MANAGED_BY_VALUE, RULE_ANNOTATION
from server.rules import PortRule, Protocol, ServiceType

Json = dict[str, Any]

# What the API server takes an absent spec.type for.
_DEFAULT_TYPE = "ClusterIP"


def name_of(service: Mapping[str, Any]) -> str:
    return str(service["metadata"]["name"])


def headless(service: Mapping[str, Any]) -> bool:
    """A Service without a cluster IP (clusterIP "None"): DNS names its Pods instead."""
    return _spec(service).get("clusterIP") == "None"


def service_type(service: Mapping[str, Any]) -> ServiceType:
    """The type a rule says: ClusterIP, or HEADLESS for a ClusterIP without a cluster IP, or
    spec.type as written."""
    kind = _type_name(service)
    if kind == _DEFAULT_TYPE and headless(service):
        return ServiceType.HEADLESS
    return ServiceType(kind)


def cluster_ip(service: Mapping[str, Any]) -> str:
    """The cluster IP the API server allocated ("None" when headless, "" before one is)."""
    return str(_spec(service).get("clusterIP") or "")


def ports(service: Mapping[str, Any]) -> tuple[PortRule, ...]:
    return tuple(
        PortRule(
            port=int(port["port"]),
            target_port=port.get("targetPort", port["port"]),
            protocol=Protocol(port.get("protocol", "TCP")),
            node_port=port.get("nodePort"),
            app_protocol=port.get("appProtocol"),
            name=port.get("name"),
        )
        for port in _spec(service).get("ports") or ()
    )


def rule_annotation(service: Mapping[str, Any]) -> str:
    """The text of the Service's rule annotation, as anyone may have set it ("" when gone)."""
    annotations = (service.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(RULE_ANNOTATION, ""))


def owner_uid(service: Mapping[str, Any]) -> str:
    """The uid of the first owner a Service names (the Deployment of one server.manifests
    builds)."""
    return str(service["metadata"]["ownerReferences"][0]["uid"])


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


def owned_items(listed: Mapping[str, Any], deployment_uid: str) -> list[Json]:
    """The Services of a ServiceList answer that the Deployment of this uid owns, by name."""
    items = [item for item in listed.get("items") or [] if isinstance(item, dict)]
    mine = [item for item in items if owned_by(item, deployment_uid)]
    return sorted(mine, key=lambda item: str(item["metadata"].get("name", "")))


def same_service(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """True when a Service read from the apiserver already is the one we would create.

    Compares what a rule decides: type, selector, headlessness, externalName, the ports (port,
    targetPort, protocol, name, appProtocol, and nodePort only where we asked for a specific
    one) and the owner. Ignores what the apiserver fills in (clusterIP, allocated node ports,
    sessionAffinity, ipFamilies, internalTrafficPolicy, ...).
    """
    e_spec, d_spec = _spec(existing), _spec(desired)
    if _type_name(existing) != _type_name(desired):
        return False
    if (e_spec.get("selector") or {}) != (d_spec.get("selector") or {}):
        return False
    if headless(existing) != headless(desired):
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


def _spec(service: Mapping[str, Any]) -> Mapping[str, Any]:
    spec: Mapping[str, Any] = service.get("spec") or {}
    return spec


def _type_name(service: Mapping[str, Any]) -> str:
    kind: str = _spec(service).get("type") or _DEFAULT_TYPE
    return kind
