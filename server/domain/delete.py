"""DeleteServices: each named Service (or, with all, each the Deployment owns) deleted if, and
only if, it is the Deployment's; apply's prune deletes through the same path.

A Service is deleted exactly as it was read (its uid and resourceVersion as preconditions): one
that changed since is read again and decided anew, at most APPLY_ROUNDS times.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Mapping
from dataclasses import replace
from typing import Any

from server.domain.errors import BadRequest
from server.domain.fanout import fan_out, remaining
from server.domain.lifecycle_context import APPLY_ROUNDS, LifecycleContext
from server.domain.lifecycle_requests import DeleteRequest
from server.domain.lifecycle_results import PRUNED_INDEX, DeleteResult
from server.domain.outcomes import Outcome
from server.domain.requests import check_count, check_target
from server.domain.rights import Rights
from server.kube.errors import KubeConflict, KubeError, KubeNotFound
from server.kube.services import owned_by, service_type
from server.manifests import Deployment
from server.rules import dns1035_label_problem

log = logging.getLogger(__name__)


def check_delete(context: LifecycleContext, request: DeleteRequest) -> None:
    check_target(request.namespace, request.deployment)
    names = request.names
    if request.all and names:
        raise BadRequest("give either names or all, not both")
    if not request.all and not names:
        raise BadRequest("nothing to delete: give the Services' names, or all")
    check_count(len(names), context.settings, noun="names", empty=None)
    seen: set[str] = set()
    for position, name in enumerate(names):
        problem = dns1035_label_problem(name)
        if problem is not None:
            raise BadRequest(
                f"names[{position}] {name!r} is not a valid Service name (a lowercase "
                f"DNS-1035 label): it {problem}"
            )
        if name in seen:
            raise BadRequest(f"names[{position}] {name!r} is named twice")
        seen.add(name)


async def delete(
    context: LifecycleContext, request: DeleteRequest, *, give_up_at: float | None = None
) -> AsyncGenerator[DeleteResult, None]:
    """One result per name (or per owned Service with all), as each is known.

    Raises RequestError before the first result for request-level failures.
    """
    check_delete(context, request)
    loop = asyncio.get_running_loop()
    owner = await context.read_deployment(
        request.namespace, request.deployment, remaining(loop, give_up_at)
    )
    jobs: list[Awaitable[DeleteResult]]
    if request.all:
        services = await context.owned_services(
            request.namespace, owner.uid, remaining(loop, give_up_at)
        )
        jobs = [
            context.in_span(
                PRUNED_INDEX,
                delete_owned(
                    context,
                    request.namespace,
                    owner,
                    service,
                    request.dry_run,
                    request.rights,
                    give_up_at,
                ),
            )
            for service in services
        ]
    else:
        jobs = [
            context.in_span(index, _delete_named(context, request, owner, name, give_up_at))
            for index, name in enumerate(request.names)
        ]
    # No give-up of its own: each API call's timeout is the time left (fanout.remaining), so
    # every job ends with its result by give_up_at.
    async for result in fan_out(jobs):
        yield result


async def _delete_named(
    context: LifecycleContext,
    request: DeleteRequest,
    owner: Deployment,
    name: str,
    give_up_at: float | None,
) -> DeleteResult:
    loop = asyncio.get_running_loop()
    try:
        try:
            service = await context.cluster.read_service(
                request.namespace, name, timeout=remaining(loop, give_up_at)
            )
        except KubeNotFound:
            return _not_owned(name, owner)
        if not owned_by(service, owner.uid):
            # The same answer as for no Service at all: the caller's rights are on the
            # Deployment's Services, and whether the namespace holds another's Service of
            # this name is not theirs to learn.
            return _not_owned(name, owner)
    except KubeError as error:
        return DeleteResult(name, Outcome.FAILED, error.message, error.reason)
    return await delete_owned(
        context, request.namespace, owner, service, request.dry_run, request.rights, give_up_at
    )


async def delete_owned(
    context: LifecycleContext,
    namespace: str,
    owner: Deployment,
    service: Mapping[str, Any],
    dry_run: bool,
    rights: Rights | None,
    give_up_at: float | None,
) -> DeleteResult:
    """Delete one of the Deployment's Services, as it was read: what it is (its type, that
    it is ours) decides, so one that changed since (the delete's preconditions fail) is
    read again and decided anew."""
    name = str(service["metadata"]["name"])
    for _ in range(APPLY_ROUNDS):
        result = await _delete(context, namespace, service, dry_run, rights, give_up_at)
        if result is not None:
            return replace(result, service_type=service_type(service))
        try:
            fresh = await context.read_service(namespace, name, give_up_at)
        except KubeError as error:
            return DeleteResult(name, Outcome.FAILED, error.message, error.reason)
        if fresh is None or not owned_by(fresh, owner.uid):
            return _not_owned(name, owner)
        service = fresh
    return DeleteResult(
        name,
        Outcome.CONFLICT,
        f'Service "{name}" changed each of the {APPLY_ROUNDS} times it was read; it was '
        "left as it is: delete again",
        "Conflict",
    )


async def _delete(
    context: LifecycleContext,
    namespace: str,
    service: Mapping[str, Any],
    dry_run: bool,
    rights: Rights | None,
    give_up_at: float | None,
) -> DeleteResult | None:
    """The delete's result, or None when the Service changed since it was read."""
    meta = service.get("metadata") or {}
    name = str(meta.get("name", ""))
    loop = asyncio.get_running_loop()
    refused = None if rights is None else rights.refusal("delete", service_type(service))
    if refused is not None:
        return DeleteResult(name, Outcome.DENIED, refused, "Forbidden")
    try:
        # Preconditions: only the Service read is deleted, not another's made since under
        # its name, nor ours changed since into a type the caller may not delete.
        await context.cluster.delete_service(
            namespace,
            name,
            uid=str(meta.get("uid", "")),
            resource_version=str(meta.get("resourceVersion", "")),
            dry_run=dry_run,
            timeout=remaining(loop, give_up_at),
        )
    except KubeNotFound as error:
        if error.unanswered_before:
            # An earlier attempt reached the API server, but its answer was lost: the
            # Service is gone because this very call deleted it.
            return DeleteResult(name, Outcome.DELETED)
        return DeleteResult(name, Outcome.NOT_FOUND, error.message, "NotFound")
    except KubeConflict:
        return None  # a precondition failed
    except KubeError as error:
        return DeleteResult(name, Outcome.FAILED, error.message, error.reason)
    except Exception as error:  # a bug of ours must still give this name its one result
        log.exception("deleting Service %r failed unexpectedly", name)
        return DeleteResult(
            name, Outcome.FAILED, f"internal error: {type(error).__name__}: {error}",
            "InternalError",
        )  # fmt: skip
    return DeleteResult(name, Outcome.DELETED)


def _not_owned(name: str, owner: Deployment) -> DeleteResult:
    return DeleteResult(
        name,
        Outcome.NOT_FOUND,
        f'Deployment "{owner.name}" has no Service "{name}" (k8sailor deletes only the '
        "Services a Deployment owns); nothing was deleted",
        "NotFound",
    )
