"""ListServices: the Services a Deployment owns, as the cluster has them."""

from __future__ import annotations

import asyncio

from server.domain.errors import NotPermitted
from server.domain.fanout import remaining
from server.domain.lifecycle_context import LifecycleContext
from server.domain.lifecycle_results import ExposedService
from server.domain.requests import check_target
from server.domain.rights import Rights
from server.domain.service_view import exposed


async def list_owned(
    context: LifecycleContext,
    namespace: str,
    deployment: str,
    *,
    grants: Rights | None = None,
    give_up_at: float | None = None,
) -> list[ExposedService]:
    """The Services the Deployment owns, sorted by name. Raises RequestError: NotPermitted
    when some of them are of a type the caller may not list."""
    check_target(namespace, deployment)
    loop = asyncio.get_running_loop()
    owner = await context.read_deployment(namespace, deployment, remaining(loop, give_up_at))
    owned = [
        exposed(service, context.rule_of(service))
        for service in await context.owned_services(
            namespace, owner.uid, remaining(loop, give_up_at)
        )
    ]
    # Refused whole rather than answered in part: a partial list would read as the truth.
    if grants is None:
        return owned
    refusals = sorted({r for s in owned if (r := grants.refusal("list", s.type))})
    if refusals:
        raise NotPermitted("; ".join(refusals))
    return owned
