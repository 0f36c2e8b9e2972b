"""ApplyServices: each rule's Service made to match it (server-side apply, field manager
"k8sailor"), and with prune, the Deployment's Services that no rule names deleted.

Apply never adopts: a Service the read did not find is created with a POST (which fails if one
was made since; its fields are then moved to k8sailor's apply), and one of ours is applied with
the uid and resourceVersion read as preconditions (server.domain.apply_writes); when either
finds the Service changed, it is read again and the rule decided anew, at most APPLY_ROUNDS
times. What changed is found by comparing the Service before and after (server.domain.diff).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Mapping
from typing import Any

from server.domain import pointing
from server.domain.apply_writes import Stale, apply_to, create
from server.domain.cooperative import in_slices
from server.domain.delete import delete_owned
from server.domain.diff import diff_service
from server.domain.fanout import fan_out, remaining
from server.domain.lifecycle_context import APPLY_ROUNDS, LifecycleContext
from server.domain.lifecycle_requests import ApplyRequest, ParsedRules
from server.domain.lifecycle_results import PRUNED_INDEX, ApplyResult
from server.domain.outcomes import Outcome, RuleResult
from server.domain.requests import EMPTY, check_count, check_target, parse_rules, rule_texts
from server.domain.rights import Rights
from server.domain.service_view import rule_result
from server.kube.errors import KubeAlreadyExists, KubeConflict, KubeError, KubeInvalid
from server.kube.services import headless, owned_by, service_type
from server.manifests import Deployment, iter_services
from server.rules import RuleError, ServiceRule, ServiceType

log = logging.getLogger(__name__)


def check_apply(context: LifecycleContext, request: ApplyRequest) -> None:
    check_target(request.namespace, request.deployment)
    empty = f"{EMPTY} (to delete every Service, use DeleteServices with all)"
    check_count(len(request.rules), context.settings, empty=empty)


async def parse(context: LifecycleContext, request: ApplyRequest) -> ParsedRules:
    """The request's rules parsed, after checking the request (BadRequest, so an oversized
    one costs nothing). In slices (server.domain.cooperative): the largest request is a few
    hundred milliseconds of CPU, which must not keep other calls waiting."""
    check_apply(context, request)
    rules = await parse_rules(request.rules, context.settings)
    return ParsedRules(rules, await rule_texts(rules))


async def apply(
    context: LifecycleContext,
    request: ApplyRequest,
    parsed: ParsedRules | None = None,
    *,
    give_up_at: float | None = None,
) -> AsyncGenerator[ApplyResult, None]:
    """One result per rule, then (with prune) one per pruned Service, as each is known.
    parsed: the request's rules as parse() returned them, when the caller has them already.

    Raises RequestError before the first result for request-level failures.
    """
    if parsed is None:
        parsed = await parse(context, request)
    else:
        check_apply(context, request)
    loop = asyncio.get_running_loop()
    owner = await context.read_deployment(
        request.namespace, request.deployment, remaining(loop, give_up_at), to_expose=True
    )
    written = [rule if isinstance(rule, str) else None for rule in request.rules]
    manifests = await in_slices(
        pointing.at_column(built, written[index]) if isinstance(built, RuleError) else built
        for index, built in enumerate(iter_services(parsed.rules, owner))
    )

    unreadable = [m for m in manifests if isinstance(m, RuleError)]
    prune = request.prune and not unreadable
    jobs: list[Awaitable[ApplyResult]] = []
    for index, manifest in enumerate(manifests):
        rule = parsed.rules[index]
        type_ = rule.type if isinstance(rule, ServiceRule) else None
        if isinstance(manifest, RuleError):
            message = str(manifest)
            if request.prune:
                message += (
                    " (nothing was pruned: with a rule that cannot be built, k8sailor "
                    "cannot tell which Services the rules name)"
                )
            invalid = RuleResult(
                manifest.index, manifest.text, Outcome.INVALID, error=message,
                reason="RuleInvalid", service_type=type_,
            )  # fmt: skip
            jobs.append(context.in_span(index, _ready(ApplyResult(invalid))))
            continue
        job = _apply_one(
            context, request, owner, index, parsed.texts[index], manifest, type_, give_up_at
        )
        jobs.append(context.in_span(index, job))
    if prune:
        named = {m["metadata"]["name"] for m in manifests if not isinstance(m, RuleError)}
        services = await context.owned_services(
            request.namespace, owner.uid, remaining(loop, give_up_at)
        )
        for service in services:
            if service["metadata"]["name"] not in named:
                jobs.append(
                    context.in_span(
                        PRUNED_INDEX, _prune(context, request, owner, service, give_up_at)
                    )
                )
    # No give-up of its own: each API call's timeout is the time left (fanout.remaining), so
    # every job ends with its result by give_up_at.
    async for result in fan_out(jobs):
        yield result


async def _ready(result: ApplyResult) -> ApplyResult:
    return result


async def _apply_one(
    context: LifecycleContext,
    request: ApplyRequest,
    owner: Deployment,
    index: int,
    text: str,
    manifest: dict[str, Any],
    type_: ServiceType | None,
    give_up_at: float | None,
) -> ApplyResult:
    name: str = manifest["metadata"]["name"]
    namespace = request.namespace

    def refused(outcome: Outcome, error: str, reason: str) -> ApplyResult:
        return ApplyResult(
            RuleResult(
                index, text, outcome, name, error=error, reason=reason, service_type=type_,
            )
        )  # fmt: skip

    wanted = service_type(manifest)
    rights = request.rights
    may_not_create = None if rights is None else rights.refusal("create", wanted)
    may_not_update = None if rights is None else rights.refusal("update", wanted)
    if may_not_create is not None and may_not_update is not None:
        # Nothing this rule could meet would let it through: refused before anything is
        # read, so that the answer says nothing of what is there.
        return refused(Outcome.DENIED, f"{may_not_create}; {may_not_update}", "Forbidden")
    try:
        existing = await context.read_service(namespace, name, give_up_at)
        created_unseen = False  # a create of ours may have been made, its answer lost
        for _ in range(APPLY_ROUNDS):
            if existing is None or not owned_by(existing, owner.uid):
                if may_not_create is not None:
                    # The same answer whether the name is free or another's Service has
                    # it: a caller that may not create this type learns neither.
                    return refused(Outcome.DENIED, may_not_create, "Forbidden")
                if existing is not None:
                    return refused(
                        Outcome.CONFLICT,
                        f'Service "{name}" already exists and does not belong to '
                        f'Deployment "{owner.name}"; it was left untouched: choose another '
                        "name with name=...",
                        "NotOwned",
                    )
                try:
                    created = await create(context, request, manifest, give_up_at)
                except KubeAlreadyExists as error:
                    # Made since it was read: by someone else (the next round reports the
                    # conflict and leaves it alone), or by this very create.
                    created_unseen = created_unseen or error.unanswered_before
                except KubeInvalid:
                    # A NodePort Service of our name that appeared since the read holds
                    # the node port: allocation is checked before names.
                    existing = await context.read_service(namespace, name, give_up_at)
                    if existing is None:
                        raise
                    continue
                else:
                    return ApplyResult(rule_result(index, text, Outcome.CREATED, created, type_))
                existing = await context.read_service(namespace, name, give_up_at)
                continue
            refusal, unknown = await _change_refusal(
                rights, name, service_type(existing), wanted, may_not_update
            )
            if unknown:
                return refused(Outcome.FAILED, unknown, "AuthUnavailable")
            if refusal is not None:
                return refused(Outcome.DENIED, refusal, "Forbidden")
            problem = _immutable_change(existing, manifest)
            if problem is not None:
                return refused(Outcome.INVALID, problem, "FieldImmutable")
            try:
                before, applied = await apply_to(context, request, existing, manifest, give_up_at)
            except Stale:
                existing = await context.read_service(namespace, name, give_up_at)
                continue
            if created_unseen:
                return ApplyResult(rule_result(index, text, Outcome.CREATED, applied, type_))
            changes = tuple(diff_service(before, applied))
            outcome = Outcome.UPDATED if changes else Outcome.UNCHANGED
            return ApplyResult(rule_result(index, text, outcome, applied, type_), changes)
        return refused(
            Outcome.CONFLICT,
            f'Service "{name}" changed each of the {APPLY_ROUNDS} times it was read; it '
            "was left as it is: apply again",
            "Conflict",
        )
    except KubeConflict as error:
        if error.managers:
            named = ", ".join(f'"{manager}"' for manager in error.managers)
            return refused(
                Outcome.CONFLICT,
                f"fields of Service {name!r} are owned by another field manager ({named}): "
                f"{error.message}; apply with force to take them over",
                "FieldManagerConflict",
            )
        return refused(Outcome.CONFLICT, error.message, error.reason or "Conflict")
    except KubeInvalid as error:
        message = error.message
        if error.immutable:
            message += f'; Service "{name}" cannot change this way: delete it and apply again'
        return refused(Outcome.INVALID, message, error.reason or "Invalid")
    except KubeError as error:
        return refused(Outcome.FAILED, error.message, error.reason)
    except Exception as error:  # a bug of ours must still give this rule its one result
        log.exception("applying rule %d %r failed unexpectedly", index, text)
        return refused(
            Outcome.FAILED, f"internal error: {type(error).__name__}: {error}", "InternalError"
        )


async def _prune(
    context: LifecycleContext,
    request: ApplyRequest,
    owner: Deployment,
    service: Mapping[str, Any],
    give_up_at: float | None,
) -> ApplyResult:
    deleted = await delete_owned(
        context, request.namespace, owner, service, request.dry_run, request.rights, give_up_at
    )
    result = RuleResult(
        PRUNED_INDEX,
        context.rule_of(service),
        deleted.outcome,
        deleted.service_name,
        error=deleted.error,
        reason=deleted.reason,
        service_type=deleted.service_type,
    )
    return ApplyResult(result)


async def _change_refusal(
    rights: Rights | None,
    name: str,
    was: ServiceType,
    wants: ServiceType,
    may_not_update: str | None,
) -> tuple[str | None, str]:
    """Why the caller may not apply a rule of type wants to its Service of type was, if it
    may not; and why that could not be decided, if the cluster could not be asked ("" when
    it was). A change of type is a delete of the one and a create of the other, so it needs
    both rights: update alone would let a caller allowed only ClusterIP turn a LoadBalancer
    it could not delete into a ClusterIP, or one allowed to update LoadBalancers promote a
    ClusterIP to one."""
    if rights is None:
        return None, ""
    if was is wants:
        return may_not_update, ""
    refusals, unknown = await rights.refusals([("delete", was), ("create", wants)])
    if unknown:
        return None, unknown
    if not refusals:
        return None, ""
    return (
        f'Service "{name}" is of type {was.value} and the rule makes it {wants.value}: a change '
        "of type needs the rights to delete the one and create the other; "
        + "; ".join(refusals[pair] for pair in sorted(refusals))
    ), ""


def _immutable_change(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> str | None:
    """A change the API server cannot make to a live Service, found before trying.

    Headless to ClusterIP must be caught here: the API server keeps an unset clusterIP at its
    old value on update, so the apply would succeed and leave the Service headless.
    """
    name = existing["metadata"]["name"]
    was, wants = headless(existing), headless(desired)
    if was == wants:
        return None
    before = "headless (clusterIP None)" if was else "not headless"
    after = "headless" if wants else "not headless"
    return (
        f'Service "{name}" is {before} and the rule makes it {after}: spec.clusterIP cannot '
        "change once set; delete the Service and apply again"
    )
