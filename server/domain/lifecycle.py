"""The rest of a Service's life after CreateServices: list, delete, and declarative apply.

No gRPC in sight, like domain.create. A Service is the Deployment's (ours to list, change and
delete) when it carries k8sailor's managed-by label and an ownerReference to the Deployment's
current uid (server.kube.services); anything else of the same name is left untouched and
reported as a CONFLICT.

Each flow lives in a module of its own (server.domain.listing, .delete, .apply); this class is
what the servicers hold: one cluster, one set of settings, one tracer for all three. Each
Service gets its own coroutine that turns every failure into a result, so one Service never
spoils the others, and every name or rule gets exactly one result. Each runs in a span of its
own (k8sailor.rule, as CreateServices' rules do), so the API calls it makes are its children.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from opentelemetry.trace import Tracer

from server.domain import apply, delete, listing
from server.domain.fanout import give_up_before
from server.domain.lifecycle_context import LifecycleCluster, LifecycleContext
from server.domain.lifecycle_requests import ApplyRequest, DeleteRequest, ParsedRules
from server.domain.lifecycle_results import ApplyResult, DeleteResult, ExposedService
from server.domain.rights import Rights
from server.domain.settings import Settings
from server.domain.spans import NO_TRACING


class Lifecycle:
    def __init__(
        self, cluster: LifecycleCluster, settings: Settings, *, tracer: Tracer | None = None
    ) -> None:
        """cluster: server.kube.Kube, or a fake in tests. tracer: where each rule's (or
        Service's) span goes; None: the no-op tracer (tracing is off: spans.NO_TRACING). Both
        as for the create flow (server.domain.create.Exposer)."""
        self._context = LifecycleContext(cluster, settings, tracer or NO_TRACING)

    async def list_owned(
        self,
        namespace: str,
        deployment: str,
        *,
        rights: Rights | None = None,
        caller_deadline: float | None = None,
    ) -> list[ExposedService]:
        """See server.domain.listing.list_owned."""
        return await listing.list_owned(
            self._context,
            namespace,
            deployment,
            rights=rights,
            give_up_at=_give_up(caller_deadline),
        )

    def check_delete(self, request: DeleteRequest) -> None:
        delete.check_delete(self._context, request)

    def delete(
        self, request: DeleteRequest, *, caller_deadline: float | None = None
    ) -> AsyncGenerator[DeleteResult, None]:
        """See server.domain.delete.delete."""
        return delete.delete(self._context, request, give_up_at=_give_up(caller_deadline))

    def check_apply(self, request: ApplyRequest) -> None:
        apply.check_apply(self._context, request)

    async def parse(self, request: ApplyRequest) -> ParsedRules:
        """See server.domain.apply.parse."""
        return await apply.parse(self._context, request)

    def apply(
        self,
        request: ApplyRequest,
        parsed: ParsedRules | None = None,
        *,
        caller_deadline: float | None = None,
    ) -> AsyncGenerator[ApplyResult, None]:
        """See server.domain.apply.apply."""
        return apply.apply(self._context, request, parsed, give_up_at=_give_up(caller_deadline))


def _give_up(caller_deadline: float | None) -> float | None:
    """When a flow called now, with the caller's deadline (loop.time() terms), stops waiting
    for the API server: early enough that the results of what did not finish reach the
    caller (server.domain.fanout, the rule CreateServices follows too)."""
    return give_up_before(caller_deadline, asyncio.get_running_loop().time())
