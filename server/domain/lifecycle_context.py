"""What the list, delete and apply flows share: the cluster, the settings and the tracer they
work with, the reads they start from (the Deployment, its Services, one Service), and the span
each of their per-Service jobs runs in."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from opentelemetry.trace import Tracer

from server.domain.cluster import Services, read_deployment
from server.domain.errors import request_error
from server.domain.fanout import remaining
from server.domain.lifecycle_results import ApplyResult, DeleteResult
from server.domain.outcomes import RuleOutcome
from server.domain.service_view import rule_of
from server.domain.settings import Settings
from server.domain.spans import in_rule_span
from server.kube.deployments import DirectReads, OwnerReads
from server.kube.errors import KubeError, KubeNotFound
from server.kube.services import owned_items
from server.manifests import MANAGED_BY_LABEL, MANAGED_BY_VALUE, Deployment

Json = dict[str, Any]
R = TypeVar("R", ApplyResult, DeleteResult)

MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"
# How often one rule reads its Service again when it changed under the write that relied on the
# read, before it ends CONFLICT: a Service that changes faster than that is fought over.
APPLY_ROUNDS = 3


class LifecycleCluster(Services, Protocol):
    """What the list, delete and apply flows ask of the cluster: what the create flow does
    (server.domain.cluster.Services: the Deployment, a Service, a create), and to list, apply
    to and delete Services. server.kube.Kube is one (each call raising its KubeError on a
    refusal); tests give a fake in memory."""

    async def list_services(
        self, namespace: str, *, label_selector: str, timeout: float | None
    ) -> Json: ...

    async def apply_service(
        self,
        namespace: str,
        manifest: Mapping[str, Any],
        *,
        force: bool,
        dry_run: bool,
        timeout: float | None,
    ) -> Json: ...

    async def replace_managed_fields(
        self,
        namespace: str,
        name: str,
        managed_fields: list[Json],
        *,
        resource_version: str,
        timeout: float | None,
    ) -> Json: ...

    async def delete_service(
        self,
        namespace: str,
        name: str,
        *,
        uid: str,
        resource_version: str = "",
        dry_run: bool,
        timeout: float | None,
    ) -> Json: ...


@dataclass(frozen=True, slots=True)
class LifecycleContext:
    cluster: LifecycleCluster
    # settings.max_rules also bounds the names of one DeleteServices request.
    settings: Settings
    tracer: Tracer

    def rule_of(self, service: Mapping[str, Any]) -> str:
        """The Service's rule as its annotation has it (service_view.rule_of)."""
        return rule_of(service, self.settings)

    async def read_deployment(
        self, namespace: str, name: str, timeout: float | None, *, to_expose: bool = False
    ) -> Deployment:
        """The Deployment; with to_expose, all of it that Services are built from (else
        DeploymentUnusable), without it only its name and uid: listing or deleting what a
        Deployment owns must work even for one whose selector no Service could express.
        Raises RequestError, as the create flow's read does (server.domain.cluster)."""
        source = DirectReads(self.cluster) if to_expose else OwnerReads(self.cluster)
        return await read_deployment(source, namespace, name, timeout=timeout)

    async def owned_services(self, namespace: str, uid: str, timeout: float | None) -> list[Json]:
        """The Services the Deployment of this uid owns, sorted by name. Raises RequestError:
        without them, the request as a whole cannot be answered."""
        try:
            listed = await self.cluster.list_services(
                namespace, label_selector=MANAGED_SELECTOR, timeout=timeout
            )
        except KubeError as error:
            raise request_error(error) from error
        return owned_items(listed, uid)

    async def read_service(
        self, namespace: str, name: str, give_up_at: float | None
    ) -> Json | None:
        """The Service as the API server has it now, or None when there is none."""
        loop = asyncio.get_running_loop()
        try:
            return await self.cluster.read_service(
                namespace, name, timeout=remaining(loop, give_up_at)
            )
        except KubeNotFound:
            return None

    async def in_span(self, index: int, job: Awaitable[R]) -> R:
        """job, run inside a rule span of its own (server.domain.spans.in_rule_span)."""
        return await in_rule_span(self.tracer, index, job, _outcome)


def _outcome(result: ApplyResult | DeleteResult) -> RuleOutcome:
    return result.result if isinstance(result, ApplyResult) else result
