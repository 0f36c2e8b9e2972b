"""The rest of a Service's life after CreateServices: list, delete, and declarative apply.

No gRPC in sight, like domain.exposer. A Service is the Deployment's (ours to list, change and
delete) when it carries k8sailor's managed-by label and an ownerReference to the Deployment's
current uid; anything else of the same name is left untouched and reported as a CONFLICT.

Apply is server-side apply with field manager "k8sailor": the API server merges, detects fields
that another manager owns (a CONFLICT naming it, unless the caller forces), validates, and with
dryRun=All says what would happen. What changed is found by comparing the Service before and
after the apply, field by field. Apply never adopts: a Service the read did not find is created
with a POST (which fails if one was made since; its fields are then moved to k8sailor's apply),
and one of ours is applied with the uid and resourceVersion read as preconditions; when either
finds the Service changed, it is read again and the rule decided anew.

Each Service gets its own coroutine that turns every failure into a result, so one Service never
spoils the others, and every name or rule gets exactly one result. Each runs in a span of its
own (k8sailor.rule, as CreateServices' rules do), so the API calls it makes are its children.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, replace
from typing import Any, Final, TypeVar

from opentelemetry import trace
from opentelemetry.trace import Tracer

from server.domain import pointing
from server.domain.cooperative import in_slices
from server.domain.exposer import (
    BadRequest,
    DeploymentNotFound,
    DeploymentUnusable,
    Outcome,
    RequestError,
    RuleResult,
    Settings,
    check_target,
    describe_rule_span,
)
from server.kube import FIELD_MANAGER, Kube
from server.kube.errors import (
    KubeAlreadyExists,
    KubeConflict,
    KubeError,
    KubeInvalid,
    KubeNotFound,
)
from server.manifests import (
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    RULE_ANNOTATION,
    Deployment,
    DeploymentError,
    iter_services,
    owned_by,
)
from server.rules import (
    MAX_RULE_LENGTH,
    PortRule,
    Protocol,
    RuleError,
    ServiceRule,
    ServiceType,
    dns1035_label_problem,
    parse_any,
    parse_rule,
)

log = logging.getLogger(__name__)

Json = dict[str, Any]
T = TypeVar("T")
R = TypeVar("R", "ApplyResult", "DeleteResult")

MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"
# A pruned Service is not one of the request's rules (nor, with all, a deleted one one of its
# names): its result and span carry this index.
PRUNED_INDEX = -1
RULE_SPAN = "k8sailor.rule"
# How often one rule reads its Service again when it changed under the write that relied on the
# read, before it ends CONFLICT: a Service that changes faster than that is fought over.
APPLY_ROUNDS = 3


#: The rule of a Service whose k8sailor.io/rule annotation is not a canonical rule (someone
#: patched it): fixed and short, and no rule parses as it, so it cannot be applied by mistake.
NOT_A_RULE: Final = "(not a k8sailor rule: the k8sailor.io/rule annotation was changed)"


@dataclass(frozen=True, slots=True)
class ExposedService:
    """A Service the Deployment owns, as the cluster has it, and the rule it was made from."""

    name: str
    type: ServiceType
    rule: str  # canonical; empty if the annotation was removed, NOT_A_RULE if changed
    cluster_ip: str
    ports: tuple[PortRule, ...]


@dataclass(frozen=True, slots=True)
class DeleteResult:
    service_name: str
    outcome: Outcome
    error: str = ""
    reason: str = ""
    service_type: ServiceType | None = None  # None: no such Service, or it could not be read


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field that an apply changed (or would): values as text, "" when absent."""

    path: str
    before: str
    after: str


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What became of one rule (or, with index -1, of one pruned Service)."""

    result: RuleResult
    changes: tuple[FieldChange, ...] = ()


# A verb (list, create, update, delete) on Services of one type.
Grant = tuple[str, ServiceType]


class RightsUnknown(Exception):
    """What the caller may do could not be asked of the cluster: nothing was decided."""


# Decides pairs that were not asked before the request reached us: the refusal, in words, of
# each the caller may not do (the others allowed). Raises RightsUnknown.
AskGrants = Callable[[Collection[Grant]], Awaitable[Mapping[Grant, str]]]


@dataclass(frozen=True, slots=True)
class Grants:
    """What the caller may do, decided by server.auth: denied holds each verb and Service type
    of `decided` that it may not, with the permission it lacks in words; the other decided
    pairs are allowed. A pair that only the cluster's state makes relevant (a type change
    needs delete on the Service's old type, known once it is read) is asked with `ask`,
    through the same cache. No Grants at all means authorization is off."""

    denied: Mapping[Grant, str]
    decided: frozenset[Grant]
    ask: AskGrants

    async def refusals(self, wanted: Collection[Grant]) -> dict[Grant, str]:
        """The refusal of each pair of wanted that the caller may not do."""
        undecided = [pair for pair in wanted if pair not in self.decided]
        asked = await self.ask(undecided) if undecided else {}
        return {
            pair: refusal
            for pair in wanted
            if (refusal := self.denied.get(pair) or asked.get(pair)) is not None
        }


class NotPermitted(RequestError):
    """The caller may not see all of what the request is about (PERMISSION_DENIED)."""


def _refusal(grants: Grants | None, verb: str, type_: ServiceType) -> str | None:
    """The refusal of a pair that was decided before the request reached us."""
    if grants is None:
        return None
    if (verb, type_) not in grants.decided:
        # A pair nobody asked about is not an allowed one: fail closed (a bug of ours).
        return f"{verb} on {type_.value} Services was not authorized for this request"
    return grants.denied.get((verb, type_))


@dataclass(frozen=True, slots=True)
class DeleteRequest:
    namespace: str
    deployment: str
    names: Sequence[str]
    all: bool = False
    dry_run: bool = False
    grants: Grants | None = None


@dataclass(frozen=True, slots=True)
class ApplyRequest:
    namespace: str
    deployment: str
    rules: Sequence[str | ServiceRule | RuleError]
    prune: bool = False
    force: bool = False
    dry_run: bool = False
    grants: Grants | None = None


@dataclass(frozen=True, slots=True)
class ParsedRules:
    """An ApplyRequest's rules parsed, once: what authorization decides on (types) and what
    apply builds from, so that neither parses them again."""

    rules: Sequence[ServiceRule | RuleError]
    texts: Sequence[str]  # each rule's canonical text, or as written when it did not parse

    @property
    def types(self) -> frozenset[ServiceType]:
        """The Service types the valid rules ask for."""
        return frozenset(rule.type for rule in self.rules if isinstance(rule, ServiceRule))


class Lifecycle:
    def __init__(self, kube: Kube, settings: Settings, *, tracer: Tracer | None = None) -> None:
        """tracer: where each rule's (or Service's) span goes; the OpenTelemetry API's own (a
        no-op until an SDK provider is installed) when not given."""
        # settings.max_rules also bounds the names of one DeleteServices request.
        self._kube = kube
        self._settings = settings
        self._tracer = tracer or trace.get_tracer(__name__)

    # ----------------------------------------------------------------------------- list

    async def list_owned(
        self,
        namespace: str,
        deployment: str,
        *,
        grants: Grants | None = None,
        deadline: float | None = None,
    ) -> list[ExposedService]:
        """The Services the Deployment owns, sorted by name. Raises RequestError or KubeError;
        NotPermitted when some of them are of a type the caller may not list."""
        check_target(namespace, deployment)
        loop = asyncio.get_running_loop()
        owner = await self._read_deployment(namespace, deployment, _remaining(loop, deadline))
        owned = [
            _exposed(service, self._rule_of(service))
            for service in await self._owned_services(
                namespace, owner.uid, _remaining(loop, deadline)
            )
        ]
        # Refused whole rather than answered in part: a partial list would read as the truth.
        refusals = sorted({r for s in owned if (r := _refusal(grants, "list", s.type))})
        if refusals:
            raise NotPermitted("; ".join(refusals))
        return owned

    # --------------------------------------------------------------------------- delete

    def check_delete(self, request: DeleteRequest) -> None:
        check_target(request.namespace, request.deployment)
        names = request.names
        if request.all and names:
            raise BadRequest("give either names or all, not both")
        if not request.all and not names:
            raise BadRequest("nothing to delete: give the Services' names, or all")
        if len(names) > self._settings.max_rules:
            raise BadRequest(
                f"{len(names)} names is more than this server accepts in one request "
                f"({self._settings.max_rules}); split them over several requests"
            )
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
        self, request: DeleteRequest, *, deadline: float | None = None
    ) -> AsyncGenerator[DeleteResult, None]:
        """One result per name (or per owned Service with all), as each is known.

        Raises RequestError or KubeError before the first result for request-level failures.
        """
        self.check_delete(request)
        loop = asyncio.get_running_loop()
        owner = await self._read_deployment(
            request.namespace, request.deployment, _remaining(loop, deadline)
        )
        jobs: list[Awaitable[DeleteResult]]
        if request.all:
            owned = await self._owned_services(
                request.namespace, owner.uid, _remaining(loop, deadline)
            )
            jobs = [
                self._in_span(
                    PRUNED_INDEX,
                    self._delete_owned(
                        request.namespace,
                        owner,
                        service,
                        request.dry_run,
                        request.grants,
                        deadline,
                    ),
                )
                for service in owned
            ]
        else:
            jobs = [
                self._in_span(index, self._delete_named(request, owner, name, deadline))
                for index, name in enumerate(request.names)
            ]
        async for result in _as_completed(jobs):
            yield result

    async def _delete_named(
        self, request: DeleteRequest, owner: Deployment, name: str, deadline: float | None
    ) -> DeleteResult:
        loop = asyncio.get_running_loop()
        try:
            try:
                service = await self._kube.read_service(
                    request.namespace, name, timeout=_remaining(loop, deadline)
                )
            except KubeNotFound:
                return _not_owned(name, owner)
            if not _owned(service, owner.uid):
                # The same answer as for no Service at all: the caller's rights are on the
                # Deployment's Services, and whether the namespace holds another's Service of
                # this name is not theirs to learn.
                return _not_owned(name, owner)
        except KubeError as error:
            return DeleteResult(name, Outcome.FAILED, error.message, error.reason)
        return await self._delete_owned(
            request.namespace, owner, service, request.dry_run, request.grants, deadline
        )

    async def _delete_owned(
        self,
        namespace: str,
        owner: Deployment,
        service: Mapping[str, Any],
        dry_run: bool,
        grants: Grants | None,
        deadline: float | None,
    ) -> DeleteResult:
        """Delete one of the Deployment's Services, as it was read: what it is (its type, that
        it is ours) decides, so one that changed since (the delete's preconditions fail) is
        read again and decided anew."""
        name = str(service["metadata"]["name"])
        for _ in range(APPLY_ROUNDS):
            result = await self._delete(namespace, service, dry_run, grants, deadline)
            if result is not None:
                return replace(result, service_type=_service_type(service))
            try:
                fresh = await self._read_service(namespace, name, deadline)
            except KubeError as error:
                return DeleteResult(name, Outcome.FAILED, error.message, error.reason)
            if fresh is None or not _owned(fresh, owner.uid):
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
        self,
        namespace: str,
        service: Mapping[str, Any],
        dry_run: bool,
        grants: Grants | None,
        deadline: float | None,
    ) -> DeleteResult | None:
        """The delete's result, or None when the Service changed since it was read."""
        meta = service.get("metadata") or {}
        name = str(meta.get("name", ""))
        loop = asyncio.get_running_loop()
        refusal = _refusal(grants, "delete", _service_type(service))
        if refusal is not None:
            return DeleteResult(name, Outcome.DENIED, refusal, "Forbidden")
        try:
            # Preconditions: only the Service read is deleted, not another's made since under
            # its name, nor ours changed since into a type the caller may not delete.
            await self._kube.delete_service(
                namespace,
                name,
                uid=str(meta.get("uid", "")),
                resource_version=str(meta.get("resourceVersion", "")),
                dry_run=dry_run,
                timeout=_remaining(loop, deadline),
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

    # ---------------------------------------------------------------------------- apply

    def check_apply(self, request: ApplyRequest) -> None:
        check_target(request.namespace, request.deployment)
        count = len(request.rules)
        if count == 0:
            raise BadRequest(
                "no rules: send at least one rule (to delete every Service, use DeleteServices "
                "with all)"
            )
        if count > self._settings.max_rules:
            raise BadRequest(
                f"{count} rules is more than this server accepts in one request "
                f"({self._settings.max_rules}); split them over several requests"
            )

    async def parse(self, request: ApplyRequest) -> ParsedRules:
        """The request's rules parsed, after checking the request (BadRequest, so an oversized
        one costs nothing). In slices (server.domain.cooperative): the largest request is a few
        hundred milliseconds of CPU, which must not keep other calls waiting."""
        self.check_apply(request)
        node_ports, external_names = self._settings.node_ports, self._settings.external_names
        rules = await in_slices(
            parse_any(rule, index, node_ports, external_names)
            for index, rule in enumerate(request.rules)
        )
        texts = await in_slices(
            rule.text if isinstance(rule, RuleError) else rule.canonical() for rule in rules
        )
        return ParsedRules(rules, texts)

    async def apply(
        self,
        request: ApplyRequest,
        parsed: ParsedRules | None = None,
        *,
        deadline: float | None = None,
    ) -> AsyncGenerator[ApplyResult, None]:
        """One result per rule, then (with prune) one per pruned Service, as each is known.
        parsed: the request's rules as parse() returned them, when the caller has them already.

        Raises RequestError or KubeError before the first result for request-level failures.
        """
        if parsed is None:
            parsed = await self.parse(request)
        else:
            self.check_apply(request)
        loop = asyncio.get_running_loop()
        owner = await self._read_deployment(
            request.namespace, request.deployment, _remaining(loop, deadline), to_expose=True
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
            service_type = rule.type if isinstance(rule, ServiceRule) else None
            if isinstance(manifest, RuleError):
                message = str(manifest)
                if request.prune:
                    message += (
                        " (nothing was pruned: with a rule that cannot be built, k8sailor "
                        "cannot tell which Services the rules name)"
                    )
                invalid = RuleResult(
                    manifest.index, manifest.text, Outcome.INVALID, error=message,
                    reason="RuleInvalid", service_type=service_type,
                )  # fmt: skip
                jobs.append(self._in_span(index, _ready(ApplyResult(invalid))))
                continue
            job = self._apply_one(
                request, owner, index, parsed.texts[index], manifest, service_type, deadline
            )
            jobs.append(self._in_span(index, job))
        if prune:
            named = {m["metadata"]["name"] for m in manifests if not isinstance(m, RuleError)}
            owned = await self._owned_services(
                request.namespace, owner.uid, _remaining(loop, deadline)
            )
            for service in owned:
                if service["metadata"]["name"] not in named:
                    jobs.append(
                        self._in_span(PRUNED_INDEX, self._prune(request, owner, service, deadline))
                    )
        async for result in _as_completed(jobs):
            yield result

    async def _in_span(self, index: int, job: Awaitable[R]) -> R:
        """job, run inside a rule span of its own (the API calls it makes are its children),
        which ends with what became of it as attributes."""
        with self._tracer.start_as_current_span(RULE_SPAN) as span:
            result = await job
            describe_rule_span(
                span, index, result.result if isinstance(result, ApplyResult) else result
            )
        return result

    async def _apply_one(
        self,
        request: ApplyRequest,
        owner: Deployment,
        index: int,
        text: str,
        manifest: dict[str, Any],
        service_type: ServiceType | None,
        deadline: float | None,
    ) -> ApplyResult:
        name: str = manifest["metadata"]["name"]

        def refused(outcome: Outcome, error: str, reason: str) -> ApplyResult:
            return ApplyResult(
                RuleResult(
                    index, text, outcome, name, error=error, reason=reason,
                    service_type=service_type,
                )
            )  # fmt: skip

        wanted = _service_type(manifest)
        may_not_create = _refusal(request.grants, "create", wanted)
        may_not_update = _refusal(request.grants, "update", wanted)
        if may_not_create is not None and may_not_update is not None:
            # Nothing this rule could meet would let it through: refused before anything is
            # read, so that the answer says nothing of what is there.
            return refused(Outcome.DENIED, f"{may_not_create}; {may_not_update}", "Forbidden")
        try:
            existing = await self._read_service(request.namespace, name, deadline)
            created_unseen = False  # a create of ours may have been made, its answer lost
            for _ in range(APPLY_ROUNDS):
                if existing is None or not _owned(existing, owner.uid):
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
                        created = await self._create(request, manifest, deadline)
                    except KubeAlreadyExists as error:
                        # Made since it was read: by someone else (the next round reports the
                        # conflict and leaves it alone), or by this very create.
                        created_unseen = created_unseen or error.unanswered_before
                    except KubeInvalid:
                        # A NodePort Service of our name that appeared since the read holds
                        # the node port: allocation is checked before names.
                        existing = await self._read_service(request.namespace, name, deadline)
                        if existing is None:
                            raise
                        continue
                    else:
                        return ApplyResult(
                            _rule_result(index, text, Outcome.CREATED, created, service_type)
                        )
                    existing = await self._read_service(request.namespace, name, deadline)
                    continue
                refusal = await _change_refusal(
                    request.grants, name, _service_type(existing), wanted, may_not_update
                )
                if refusal is not None:
                    return refused(Outcome.DENIED, refusal, "Forbidden")
                problem = _immutable_change(existing, manifest)
                if problem is not None:
                    return refused(Outcome.INVALID, problem, "FieldImmutable")
                try:
                    before, applied = await self._apply_to(request, existing, manifest, deadline)
                except _Stale:
                    existing = await self._read_service(request.namespace, name, deadline)
                    continue
                if created_unseen:
                    return ApplyResult(
                        _rule_result(index, text, Outcome.CREATED, applied, service_type)
                    )
                changes = tuple(diff_service(before, applied))
                outcome = Outcome.UPDATED if changes else Outcome.UNCHANGED
                return ApplyResult(
                    _rule_result(index, text, outcome, applied, service_type), changes
                )
            return refused(
                Outcome.CONFLICT,
                f'Service "{name}" changed each of the {APPLY_ROUNDS} times it was read; it '
                "was left as it is: apply again",
                "Conflict",
            )
        except KubeConflict as error:
            managers = conflicting_managers(error.message)
            if managers:
                named = ", ".join(f'"{manager}"' for manager in managers)
                return refused(
                    Outcome.CONFLICT,
                    f"fields of Service {name!r} are owned by another field manager ({named}): "
                    f"{error.message}; apply with force to take them over",
                    "FieldManagerConflict",
                )
            return refused(Outcome.CONFLICT, error.message, error.reason or "Conflict")
        except KubeInvalid as error:
            message = error.message
            if _is_immutable(message):
                message += f'; Service "{name}" cannot change this way: delete it and apply again'
            return refused(Outcome.INVALID, message, error.reason or "Invalid")
        except KubeError as error:
            return refused(Outcome.FAILED, error.message, error.reason)
        except RightsUnknown as error:
            return refused(Outcome.FAILED, str(error), "AuthUnavailable")
        except Exception as error:  # a bug of ours must still give this rule its one result
            log.exception("applying rule %d %r failed unexpectedly", index, text)
            return refused(
                Outcome.FAILED, f"internal error: {type(error).__name__}: {error}", "InternalError"
            )

    async def _read_service(self, namespace: str, name: str, deadline: float | None) -> Json | None:
        """The Service as the API server has it now, or None when there is none."""
        loop = asyncio.get_running_loop()
        try:
            return await self._kube.read_service(
                namespace, name, timeout=_remaining(loop, deadline)
            )
        except KubeNotFound:
            return None

    async def _create(
        self, request: ApplyRequest, manifest: Mapping[str, Any], deadline: float | None
    ) -> Json:
        """Create the Service, never touching one that is there already (KubeAlreadyExists):
        a server-side apply would merge into whatever was made since the read, and adopt it.
        Its fields are then made those of k8sailor's apply, as if the apply had created it."""
        loop = asyncio.get_running_loop()
        created = await self._kube.create_service(
            request.namespace, manifest, dry_run=request.dry_run, timeout=_remaining(loop, deadline)
        )
        if request.dry_run:
            return created
        try:
            return await self._adopt(request.namespace, created, deadline)
        except KubeError as error:
            # Created all the same: the next apply moves the fields before it applies.
            log.warning(
                "Service %r was created, but its fields were not moved to k8sailor's apply: %s",
                manifest["metadata"]["name"], error.message,
            )  # fmt: skip
            return created

    async def _apply_to(
        self,
        request: ApplyRequest,
        existing: Json,
        manifest: Mapping[str, Any],
        deadline: float | None,
    ) -> tuple[Json, Json]:
        """Apply the manifest to exactly the Service read (one of ours): the Service before
        and after. _Stale when it changed since the read."""
        meta = existing["metadata"]
        if not request.dry_run:
            try:
                existing = await self._adopt(request.namespace, existing, deadline)
            except KubeNotFound as error:
                raise _Stale from error
            except KubeInvalid:
                # The API server says only "rejected" when the patch's test of the
                # resourceVersion failed: see whether the Service changed.
                now = await self._read_service(request.namespace, meta["name"], deadline)
                if now is None or now["metadata"].get("resourceVersion") != meta.get(
                    "resourceVersion"
                ):
                    raise _Stale from None
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
            return existing, await self._apply_forcing_our_own(request, body, deadline)
        except KubeConflict as error:
            if conflicting_managers(error.message):
                raise
            raise _Stale from error

    async def _apply_forcing_our_own(
        self, request: ApplyRequest, body: Mapping[str, Any], deadline: float | None
    ) -> Json:
        """Apply, taking over without force only the fields that k8sailor's own
        CreateServices set (a conflict with manager "k8sailor" is a conflict with ourselves:
        in dry runs, where _adopt cannot move them first)."""
        loop = asyncio.get_running_loop()
        try:
            return await self._kube.apply_service(
                request.namespace,
                body,
                force=request.force,
                dry_run=request.dry_run,
                timeout=_remaining(loop, deadline),
            )
        except KubeConflict as error:
            if conflicting_managers(error.message) != [FIELD_MANAGER]:
                raise
        return await self._kube.apply_service(
            request.namespace,
            body,
            force=True,
            dry_run=request.dry_run,
            timeout=_remaining(loop, deadline),
        )

    async def _adopt(self, namespace: str, service: Json, deadline: float | None) -> Json:
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
        return await self._kube.replace_managed_fields(
            namespace,
            service["metadata"]["name"],
            moved,
            resource_version=str(service["metadata"].get("resourceVersion", "")),
            timeout=_remaining(loop, deadline),
        )

    async def _prune(
        self,
        request: ApplyRequest,
        owner: Deployment,
        service: Mapping[str, Any],
        deadline: float | None,
    ) -> ApplyResult:
        deleted = await self._delete_owned(
            request.namespace, owner, service, request.dry_run, request.grants, deadline
        )
        rule = self._rule_of(service)
        result = RuleResult(
            PRUNED_INDEX,
            rule,
            deleted.outcome,
            deleted.service_name,
            error=deleted.error,
            reason=deleted.reason,
            service_type=deleted.service_type,
        )
        return ApplyResult(result)

    # -------------------------------------------------------------------------- shared

    def _rule_of(self, service: Mapping[str, Any]) -> str:
        """The Service's rule, from its annotation, only if the annotation reads back as a
        canonical rule: anyone with patch rights on Services may set it to any text (up to
        256 KiB, escape sequences included), which would go into every answer. "" when the
        annotation is gone, NOT_A_RULE when it is something else."""
        text = _annotation(service)
        if not text:
            return ""
        if len(text) > MAX_RULE_LENGTH:
            return NOT_A_RULE
        settings = self._settings
        try:
            rule = parse_rule(text, 0, settings.node_ports, settings.external_names)
        except RuleError:
            return NOT_A_RULE
        return text if rule.canonical() == text else NOT_A_RULE

    async def _read_deployment(
        self, namespace: str, name: str, timeout: float | None, *, to_expose: bool = False
    ) -> Deployment:
        """The Deployment; with to_expose, all of it that Services are built from (else
        DeploymentUnusable), without it only its name and uid: listing or deleting what a
        Deployment owns must work even for one whose selector no Service could express."""
        try:
            raw = await self._kube.read_deployment(namespace, name, timeout=timeout)
        except KubeNotFound as error:
            raise DeploymentNotFound(
                f'Deployment "{name}" not found in namespace "{namespace}" ({error.message})'
            ) from error
        if to_expose:
            try:
                return Deployment.from_manifest(raw)
            except DeploymentError as error:
                raise DeploymentUnusable(str(error)) from error
        meta = raw.get("metadata") or {}
        return Deployment(str(meta.get("name", name)), namespace, str(meta.get("uid", "")), {})

    async def _owned_services(self, namespace: str, uid: str, timeout: float | None) -> list[Json]:
        listed = await self._kube.list_services(
            namespace, label_selector=MANAGED_SELECTOR, timeout=timeout
        )
        items = [item for item in listed.get("items") or [] if isinstance(item, dict)]
        owned = [item for item in items if _owned(item, uid)]
        return sorted(owned, key=lambda item: str(item["metadata"].get("name", "")))


def _not_owned(name: str, owner: Deployment) -> DeleteResult:
    return DeleteResult(
        name,
        Outcome.NOT_FOUND,
        f'Deployment "{owner.name}" has no Service "{name}" (k8sailor deletes only the '
        "Services a Deployment owns); nothing was deleted",
        "NotFound",
    )


class _Stale(Exception):
    """The Service changed between its read and the write that relied on it: read again."""


async def _change_refusal(
    grants: Grants | None,
    name: str,
    was: ServiceType,
    wants: ServiceType,
    may_not_update: str | None,
) -> str | None:
    """Why the caller may not apply a rule of type wants to its Service of type was, if it
    may not. A change of type is a delete of the one and a create of the other, so it needs
    both rights: update alone would let a caller allowed only ClusterIP turn a LoadBalancer
    it could not delete into a ClusterIP, or one allowed to update LoadBalancers promote a
    ClusterIP to one."""
    if grants is None:
        return None
    if was is wants:
        return may_not_update
    refusals = await grants.refusals([("delete", was), ("create", wants)])
    if not refusals:
        return None
    return (
        f'Service "{name}" is of type {was.value} and the rule makes it {wants.value}: a change '
        "of type needs the rights to delete the one and create the other; "
        + "; ".join(refusals[pair] for pair in sorted(refusals))
    )


def _owned(service: Mapping[str, Any], uid: str) -> bool:
    labels = (service.get("metadata") or {}).get("labels") or {}
    return labels.get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE and owned_by(service, uid)


def _annotation(service: Mapping[str, Any]) -> str:
    annotations = (service.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(RULE_ANNOTATION, ""))


def _headless(service: Mapping[str, Any]) -> bool:
    return (service.get("spec") or {}).get("clusterIP") == "None"


def _service_type(service: Mapping[str, Any]) -> ServiceType:
    spec = service.get("spec") or {}
    kind = spec.get("type") or "ClusterIP"
    if kind == "ClusterIP" and _headless(service):
        return ServiceType.HEADLESS
    return ServiceType(kind)


def _ports(service: Mapping[str, Any]) -> tuple[PortRule, ...]:
    return tuple(
        PortRule(
            port=int(port["port"]),
            target_port=port.get("targetPort", port["port"]),
            protocol=Protocol(port.get("protocol", "TCP")),
            node_port=port.get("nodePort"),
            app_protocol=port.get("appProtocol"),
            name=port.get("name"),
        )
        for port in (service.get("spec") or {}).get("ports") or ()
    )


def _exposed(service: Mapping[str, Any], rule: str) -> ExposedService:
    return ExposedService(
        name=str(service["metadata"]["name"]),
        type=_service_type(service),
        rule=rule,
        cluster_ip=str((service.get("spec") or {}).get("clusterIP") or ""),
        ports=_ports(service),
    )


def _rule_result(
    index: int,
    text: str,
    outcome: Outcome,
    service: Mapping[str, Any],
    service_type: ServiceType | None,
) -> RuleResult:
    return RuleResult(
        index=index,
        rule=text,
        outcome=outcome,
        service_name=str(service["metadata"]["name"]),
        cluster_ip=str((service.get("spec") or {}).get("clusterIP") or ""),
        ports=_ports(service),
        service_type=service_type,
    )


def _immutable_change(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> str | None:
    """A change the API server cannot make to a live Service, found before trying.

    Headless to ClusterIP must be caught here: the API server keeps an unset clusterIP at its
    old value on update, so the apply would succeed and leave the Service headless.
    """
    name = existing["metadata"]["name"]
    was, wants = _headless(existing), _headless(desired)
    if was == wants:
        return None
    before = "headless (clusterIP None)" if was else "not headless"
    after = "headless" if wants else "not headless"
    return (
        f'Service "{name}" is {before} and the rule makes it {after}: spec.clusterIP cannot '
        "change once set; delete the Service and apply again"
    )


def _is_immutable(message: str) -> bool:
    return "immutable" in message or "may not change once set" in message


_CONFLICT_MANAGER = re.compile(r'conflicts? with "([^"]+)"')


def conflicting_managers(message: str) -> list[str]:
    """The field managers a server-side apply conflict names, in order, each once.

    The API server lists them only in its message, as 'conflict with "kubectl-edit" using v1'.
    """
    return list(dict.fromkeys(_CONFLICT_MANAGER.findall(message)))


def adopt_managed_fields(entries: Sequence[Mapping[str, Any]]) -> list[Json] | None:
    """managedFields with k8sailor's Update entries folded into its Apply entry, or None when
    there is none to fold."""
    ours = [
        e
        for e in entries
        if e.get("manager") == FIELD_MANAGER and e.get("operation") == "Update"
        and not e.get("subresource")
    ]  # fmt: skip
    if not ours:
        return None
    applied = [
        e for e in entries if e.get("manager") == FIELD_MANAGER and e.get("operation") == "Apply"
    ]
    rest = [dict(e) for e in entries if all(e is not x for x in (*ours, *applied))]
    fields: Json = {}
    for entry in (*applied, *ours):
        fields = _merge_fields(fields, entry.get("fieldsV1") or {})
    base = dict(applied[0] if applied else ours[0])
    base.update(operation="Apply", fieldsType="FieldsV1", fieldsV1=fields)
    return [*rest, base]


def _merge_fields(a: Mapping[str, Any], b: Mapping[str, Any]) -> Json:
    """The union of two fieldsV1 trees (nested maps of owned fields)."""
    merged: Json = dict(a)
    for key, value in b.items():
        if key in merged and isinstance(merged[key], Mapping) and isinstance(value, Mapping):
            merged[key] = _merge_fields(merged[key], value)
        else:
            merged[key] = value
    return merged


# What a rule decides about a Service; the rest (status, managedFields, resourceVersion, ...)
# is the API server's bookkeeping, not a change anyone asked for.
_COMPARED = (("metadata", "labels"), ("metadata", "annotations"),
             ("metadata", "ownerReferences"), ("spec",))  # fmt: skip


def diff_service(before: Mapping[str, Any], after: Mapping[str, Any]) -> Iterable[FieldChange]:
    """The fields that differ between two versions of a Service, in a stable order."""
    for path in _COMPARED:
        old: Any = before
        new: Any = after
        for key in path:
            old = old.get(key) if isinstance(old, Mapping) else None
            new = new.get(key) if isinstance(new, Mapping) else None
        yield from _diff(".".join(path), old, new)


def _diff(path: str, old: Any, new: Any) -> Iterable[FieldChange]:
    if old == new:
        return
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in sorted(set(old) | set(new)):
            yield from _diff(_field_path(path, key), old.get(key), new.get(key))
        return
    if isinstance(old, list) and isinstance(new, list):
        for i in range(max(len(old), len(new))):
            yield from _diff(
                f"{path}[{i}]",
                old[i] if i < len(old) else None,
                new[i] if i < len(new) else None,
            )
        return
    yield FieldChange(path, _text(old), _text(new))


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _field_path(path: str, key: str) -> str:
    if _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key)}]"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _remaining(loop: asyncio.AbstractEventLoop, deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return max(deadline - loop.time(), 0.001)


def give_up_at(loop: asyncio.AbstractEventLoop, seconds_left: float | None) -> float | None:
    """When to stop waiting for the API server, in loop.time() terms, so that the results of
    what did not finish still reach the caller before its deadline: a tenth of the time left
    early, at least 50 ms and at most half a second, as the exposer does."""
    if seconds_left is None:
        return None
    return loop.time() + seconds_left - min(max(seconds_left * 0.1, 0.05), 0.5)


async def _ready(result: ApplyResult) -> ApplyResult:
    return result


async def _as_completed(jobs: Sequence[Awaitable[T]]) -> AsyncGenerator[T, None]:
    """Each job's result as soon as it is known; no job outlives the generator."""
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        for next_done in asyncio.as_completed(tasks):
            yield await next_done
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
