"""The writes of one ApplyServices rule: create a Service the read did not find, or apply to
exactly the one of ours that was read, moving the fields CreateServices set to k8sailor's
apply first. Stale when the Service changed since the read: the rule then reads it again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from server.domain.fanout import remaining
from server.domain.field_managers import adopt_managed_fields
from server.domain.lifecycle_context import LifecycleContext
from server.domain.lifecycle_requests import ApplyRequest
from server.kube import FIELD_MANAGER
from server.kube.errors import KubeConflict, KubeError, KubeInvalid, KubeNotFound

log = logging.getLogger(__name__)

Json = dict[str, Any]


class Stale(Exception):
    """The Service changed between its read and the write that relied on it: read again."""


async def create(
    context: LifecycleContext,
    request: ApplyRequest,
    manifest: Mapping[str, Any],
    give_up_at: float | None,
) -> Json:
    """Create the Service, never touching one that is there already (KubeAlreadyExists):
    a server-side apply would merge into whatever was made since the read, and adopt it.
    Its fields are then made those of k8sailor's apply, as if the apply had created it."""
    loop = asyncio.get_running_loop()
    created = await context.kube.create_service(
        request.namespace, manifest, dry_run=request.dry_run, timeout=remaining(loop, give_up_at)
    )
    if request.dry_run:
        return created
    try:
        return await _adopt(context, request.namespace, created, give_up_at)
    except KubeError as error:
        # Created all the same: the next apply moves the fields before it applies.
        log.warning(
            "Service %r was created, but its fields were not moved to k8sailor's apply: %s",
            manifest["metadata"]["name"], error.message,
        )  # fmt: skip
        return created


async def apply_to(
    context: LifecycleContext,
    request: ApplyRequest,
    existing: Json,
    manifest: Mapping[str, Any],
    give_up_at: float | None,
) -> tuple[Json, Json]:
    """Apply the manifest to exactly the Service read (one of ours): the Service before
    and after. Stale when it changed since the read."""
    meta = existing["metadata"]
    if not request.dry_run:
        try:
            existing = await _adopt(context, request.namespace, existing, give_up_at)
        except KubeNotFound as error:
            raise Stale from error
        except KubeInvalid:
            # The API server says only "rejected" when the patch's test of the
            # resourceVersion failed: see whether the Service changed.
            now = await context.read_service(request.namespace, meta["name"], give_up_at)
            if now is None or now["metadata"].get("resourceVersion") != meta.get("resourceVersion"):
                raise Stale from None
            raise
        meta = existing["metadata"]
    # Preconditions: with the resourceVersion read, the API server answers 409 rather than
    # merge into a Service that is no longer the one checked (another's, made after ours
    # was deleted); with its uid, rather than create it anew when it was deleted.
    preconditions = {
        "uid": str(meta.get("uid", "")),
        "resourceVersion": str(meta.get("resourceVersion", "")),
    }
    body = {**manifest, "metadata": {**manifest["metadata"], **preconditions}}
    try:
        return existing, await _apply_forcing_our_own(context, request, body, give_up_at)
    except KubeConflict as error:
        if error.managers:
            raise
        raise Stale from error


async def _apply_forcing_our_own(
    context: LifecycleContext,
    request: ApplyRequest,
    body: Mapping[str, Any],
    give_up_at: float | None,
) -> Json:
    """Apply, taking over without force only the fields that k8sailor's own
    CreateServices set (a conflict with manager "k8sailor" is a conflict with ourselves:
    in dry runs, where _adopt cannot move them first)."""
    loop = asyncio.get_running_loop()
    try:
        return await context.kube.apply_service(
            request.namespace,
            body,
            force=request.force,
            dry_run=request.dry_run,
            timeout=remaining(loop, give_up_at),
        )
    except KubeConflict as error:
        if error.managers != (FIELD_MANAGER,):
            raise
    return await context.kube.apply_service(
        request.namespace,
        body,
        force=True,
        dry_run=request.dry_run,
        timeout=remaining(loop, give_up_at),
    )


async def _adopt(
    context: LifecycleContext, namespace: str, service: Json, give_up_at: float | None
) -> Json:
    """Make the fields that CreateServices set (manager k8sailor, operation Update) those
    of k8sailor's apply, as kubectl does when it moves from client- to server-side apply.

    Without it, server-side apply would neither change nor remove them: a port that a
    changed rule drops would stay on the Service, owned by the create.
    """
    entries = service["metadata"].get("managedFields") or []
    moved = adopt_managed_fields(entries)
    if moved is None:
        return service
    loop = asyncio.get_running_loop()
    return await context.kube.replace_managed_fields(
        namespace,
        service["metadata"]["name"],
        moved,
        resource_version=str(service["metadata"].get("resourceVersion", "")),
        timeout=remaining(loop, give_up_at),
    )
