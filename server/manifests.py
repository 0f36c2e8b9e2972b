"""Service manifests from validated rules and a Deployment.

Pure, like :mod:`server.rules`: no I/O, no grpc, and no kubernetes_asyncio model classes. The
manifests are plain dicts in the camelCase JSON shape the apiserver speaks, ready to be sent as
a request body; the model constructors are far too slow for 50k rules/s, and the apiserver is
the one to judge the object anyway.

What this layer decides: the Service's name (explicit, else derived from the Deployment's), its
selector (the Deployment's ``matchLabels``), port names, the owner reference that lets the
garbage collector delete the Services with their Deployment, the ``managed-by`` label and the
annotation that records the canonical rule. What it refuses, as :class:`~server.rules.RuleError`:
a named target port the Deployment does not have, a derived name that is not a DNS-1035 label,
two rules of one request that would get the same name.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from server.rules import (
    KUBE_SERVICE_TYPE,
    NAME_SUFFIX,
    Protocol,
    RuleError,
    ServiceRule,
    ServiceType,
    dns1035_label_problem,
    port_names,
)

__all__ = [
    "MANAGED_BY_LABEL",
    "MANAGED_BY_VALUE",
    "MAX_ANNOTATIONS_BYTES",
    "RULE_ANNOTATION",
    "ContainerPort",
    "Deployment",
    "DeploymentError",
    "build_service",
    "build_services",
    "iter_services",
    "service_name",
]

#: Label on every Service we create, as the Kubernetes recommended labels spell it.
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE: Final = "k8sailor"
#: Annotation holding the canonical text of the rule a Service was built from.
RULE_ANNOTATION: Final = "k8sailor.io/rule"
#: The apiserver's limit on the total size of an object's annotations (keys plus values).
MAX_ANNOTATIONS_BYTES: Final = 256 * 1024
_MAX_RULE_CHARS: Final = MAX_ANNOTATIONS_BYTES - len(RULE_ANNOTATION)  # rules are ASCII

# Plain str values for the manifests: Protocol members are str subclasses, but the manifests
# should hold exactly what json.loads of the apiserver's answer would.
_PROTOCOL_TEXT: Final[dict[Protocol, str]] = {p: p.value for p in Protocol}


class DeploymentError(Exception):
    """A Deployment that Services cannot be built for (for example, one whose selector a
    Service selector cannot express). A request-level problem: no rule of it can succeed."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class ContainerPort:
    """A port of one of the Deployment's pod containers (``name`` None when unnamed)."""

    name: str | None
    port: int
    protocol: Protocol


@dataclass(frozen=True, slots=True)
class Deployment:
    """What the builder needs to know about the Deployment being exposed."""

    name: str
    namespace: str
    uid: str
    selector: Mapping[str, str] = field(hash=False)
    container_ports: tuple[ContainerPort, ...] = ()

    @classmethod
    def from_manifest(cls, obj: Mapping[str, Any]) -> Deployment:
        """Read a Deployment from the apiserver's JSON (camelCase, as ``_preload_content=False``
        returns it). Raises :class:`DeploymentError` if it cannot be exposed."""
        meta = obj.get("metadata")
        if not isinstance(meta, Mapping):
            raise DeploymentError("the Deployment has no metadata")
        name = _required(meta, "name")
        namespace = _required(meta, "namespace")
        uid = _required(meta, "uid")
        spec = obj.get("spec")
        if not isinstance(spec, Mapping):
            spec = {}
        selector = _selector_labels(name, spec.get("selector"))
        template = spec.get("template")
        pod_spec = template.get("spec") if isinstance(template, Mapping) else None
        ports = _container_ports(pod_spec) if isinstance(pod_spec, Mapping) else ()
        return cls(name, namespace, uid, selector, ports)


def _required(meta: Mapping[str, Any], key: str) -> str:
    value = meta.get(key)
    if not isinstance(value, str) or not value:
        raise DeploymentError(f"the Deployment has no metadata.{key}")
    return value


def _selector_labels(name: str, selector: Any) -> dict[str, str]:
    """The Deployment's selector as the exact labels a Service selector needs.

    A Service selects by exact labels only. ``matchLabels`` carry over, and so does an ``In``
    expression with a single value (it means key=value). Anything else would make the Service
    select pods the Deployment does not (or miss some), so it is refused, as kubectl expose
    refuses it.
    """
    if not isinstance(selector, Mapping):
        selector = {}
    raw_labels = selector.get("matchLabels")
    labels: dict[str, str] = {}
    if isinstance(raw_labels, Mapping):
        labels = {str(k): str(v) for k, v in raw_labels.items()}
    raw_expressions = selector.get("matchExpressions")
    expressions = raw_expressions if isinstance(raw_expressions, Sequence) else []
    inexpressible: list[str] = []
    for expression in expressions:
        if not isinstance(expression, Mapping):
            continue
        key = str(expression.get("key"))
        operator = str(expression.get("operator"))
        values = [str(v) for v in expression.get("values") or []]
        if operator == "In" and len(values) == 1:
            if key in labels and labels[key] != values[0]:
                raise DeploymentError(
                    f'deployment "{name}" has a selector that matches no pod: matchLabels '
                    f"say {key}={labels[key]} and matchExpressions say {key}={values[0]}"
                )
            labels[key] = values[0]
        else:
            shown = f"{key} {operator}"
            if values:
                shown += " [" + ", ".join(values) + "]"
            inexpressible.append(shown)
    if inexpressible:
        only = "" if raw_labels else "only "
        raise DeploymentError(
            f'deployment "{name}" selects its pods {only}with matchExpressions '
            f"({'; '.join(inexpressible)}), which a Service cannot express: a Service selects "
            "by exact labels. Give the Deployment a matchLabels selector."
        )
    if not labels:
        raise DeploymentError(
            f'deployment "{name}" has no matchLabels in its selector, so a Service '
            "would select every pod in the namespace"
        )
    return labels


def _container_ports(pod_spec: Mapping[str, Any]) -> tuple[ContainerPort, ...]:
    """Ports a named target port can resolve to: those of the containers and, as the
    EndpointSlice controller does it, of sidecars (init containers with restartPolicy Always)."""
    found: list[ContainerPort] = []
    containers = list(pod_spec.get("containers") or [])
    containers += [
        c
        for c in pod_spec.get("initContainers") or []
        if isinstance(c, Mapping) and c.get("restartPolicy") == "Always"
    ]
    for container in containers:
        if not isinstance(container, Mapping):
            continue
        for port in container.get("ports") or []:
            if not isinstance(port, Mapping):
                continue
            number = port.get("containerPort")
            if not isinstance(number, int):
                continue
            try:
                protocol = Protocol(port.get("protocol") or "TCP")
            except ValueError:
                continue
            name = port.get("name")
            found.append(
                ContainerPort(name if isinstance(name, str) and name else None, number, protocol)
            )
    return tuple(found)


def service_name(rule: ServiceRule, deployment_name: str) -> str:
    """The Service's name: the rule's own, else the Deployment's, as ``kubectl expose`` names a
    ClusterIP Service, with ``-headless``, ``-nodeport``, ``-lb`` or ``-external`` for the rest."""
    if rule.name is not None:
        return rule.name
    return deployment_name + NAME_SUFFIX[rule.type]


def _error(rule: ServiceRule, index: int, path: str, message: str) -> RuleError:
    """An error found while building, at a field path of the rule (server.domain.pointing turns it
    into a column of the caller's text when the rule came as text)."""
    return RuleError(index, rule.canonical(), path, None, message)


def build_service(rule: ServiceRule, deployment: Deployment, index: int) -> dict[str, Any]:
    """One Service manifest for a validated rule (from :func:`~server.rules.parse_rule` or
    :func:`~server.rules.check_rule`).

    Raises :class:`RuleError` naming a field path of the rule (never a column: this layer does
    not see the caller's text; see server.domain.pointing).
    """
    return _build(rule, deployment, _named_ports(deployment), index)


def _named_ports(deployment: Deployment) -> frozenset[tuple[str, Protocol]]:
    """The (name, protocol) pairs a named target port can resolve to: worked out once per
    request, so that a rule costs one lookup per named port, not ports x container ports."""
    return frozenset((cp.name, cp.protocol) for cp in deployment.container_ports if cp.name)


def _build(
    rule: ServiceRule,
    deployment: Deployment,
    named_ports: frozenset[tuple[str, Protocol]],
    index: int,
) -> dict[str, Any]:
    rtype = rule.type
    name = rule.name
    if name is None:
        name = service_name(rule, deployment.name)
        problem = dns1035_label_problem(name)
        if problem is not None:
            raise _error(
                rule,
                index,
                "name",
                f'the Service name "{name}" derived from deployment "{deployment.name}" is not '
                f"a valid DNS-1035 label: it {problem}; give the rule a name, as in "
                f"my-service={rule.canonical()}",
            )
    canonical = rule.canonical()
    if len(canonical) > _MAX_RULE_CHARS:
        raise _error(
            rule,
            index,
            "ports",
            f"the rule is {len(canonical)} characters long, too long to record in an annotation "
            f"(the apiserver allows {MAX_ANNOTATIONS_BYTES} bytes); split it into several rules",
        )

    if rtype is ServiceType.EXTERNAL_NAME:
        spec: dict[str, Any] = {"type": "ExternalName", "externalName": rule.external_name}
    else:
        ports = []
        for i, (p, port_name) in enumerate(zip(rule.ports, port_names(rule), strict=True)):
            target = p.target_port
            if isinstance(target, str):
                _check_named_target(rule, deployment, named_ports, index, i)
            port: dict[str, Any] = {
                "name": port_name,
                "protocol": _PROTOCOL_TEXT[p.protocol],
                "port": p.port,
                "targetPort": target,
            }
            if p.node_port is not None:
                port["nodePort"] = p.node_port
            if p.app_protocol is not None:
                port["appProtocol"] = p.app_protocol
            ports.append(port)
        spec = {
            "type": KUBE_SERVICE_TYPE[rtype],
            "selector": {**deployment.selector},
            "ports": ports,
        }
        if rtype is ServiceType.HEADLESS:
            spec["clusterIP"] = "None"

    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": deployment.namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE},
            "annotations": {RULE_ANNOTATION: canonical},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": deployment.name,
                    "uid": deployment.uid,
                    # No blockOwnerDeletion: setting it needs permission to update the
                    # Deployment's finalizers, which k8sailor should not have to ask for.
                    "controller": True,
                }
            ],
        },
        "spec": spec,
    }


def _check_named_target(
    rule: ServiceRule,
    deployment: Deployment,
    named_ports: frozenset[tuple[str, Protocol]],
    index: int,
    i: int,
) -> None:
    """A named target port resolves per pod, by name and protocol; one the Deployment's pods
    do not have would leave the Service without endpoints, silently. Refuse it now."""
    port = rule.ports[i]
    target, protocol = port.target_port, port.protocol
    if (target, protocol) in named_ports:
        return
    other_protocols = []
    for cp in deployment.container_ports:
        if cp.name == target:
            if cp.protocol is protocol:
                return
            other_protocols.append(cp.protocol.value)
    if other_protocols:
        message = (
            f'container port "{target}" of deployment "{deployment.name}" is '
            f"{'/'.join(sorted(set(other_protocols)))}, not {protocol.value}; "
            f"give the protocol, as in {port.port}:{target}/{other_protocols[0].lower()}"
        )
    else:
        named = sorted(
            {f"{cp.name} ({cp.protocol.value})" for cp in deployment.container_ports if cp.name}
        )
        if named:
            listed = "its named ports are " + ", ".join(named)
        else:
            listed = "it has no named container ports"
        message = f'deployment "{deployment.name}" has no container port named "{target}"; {listed}'
    raise _error(rule, index, f"ports[{i}].target_port", message)


def build_services(
    rules: Sequence[ServiceRule | RuleError], deployment: Deployment
) -> list[dict[str, Any] | RuleError]:
    """One manifest or error per input, in order; parse errors pass through unchanged.

    Also refuses a rule whose Service would get the same name as an earlier rule's: creating
    it would fail (or, worse, look like the first one already existing). The index of each
    rule is its position.
    """
    return list(iter_services(rules, deployment))


def iter_services(
    rules: Sequence[ServiceRule | RuleError], deployment: Deployment
) -> Iterator[dict[str, Any] | RuleError]:
    """:func:`build_services` one rule at a time, for callers that build in slices."""
    taken: dict[str, int] = {}
    named_ports = _named_ports(deployment)
    for i, rule in enumerate(rules):
        if isinstance(rule, RuleError):
            yield rule
            continue
        try:
            manifest = _build(rule, deployment, named_ports, i)
        except RuleError as e:
            yield e
            continue
        name: str = manifest["metadata"]["name"]
        first = taken.get(name)
        if first is not None:
            suggestion = f"{name}-{i}" if len(name) < 60 else "another-name"
            body = rule.canonical()
            if rule.name is not None:
                body = body[len(rule.name) + 1 :]
            yield _error(
                rule,
                i,
                "name",
                f'rule {first} already makes a Service named "{name}"; give this one '
                f"its own name, as in {suggestion}={body}",
            )
            continue
        taken[name] = i
        yield manifest
