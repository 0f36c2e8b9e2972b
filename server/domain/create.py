"""One CreateServices request, from rules to per-rule results, with no gRPC in sight.

The flow: check the request, parse every rule, read the Deployment once, build every manifest,
then create the Services concurrently and yield each rule's result the moment it is known.
Each rule runs in its own coroutine that turns every failure into a RuleResult, so one bad rule
never cancels the others, and every rule gets exactly one result, even when the caller's
deadline passes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from opentelemetry.trace import Tracer

from server.domain import pointing
from server.domain.cluster import Services, read_deployment
from server.domain.cooperative import in_slices
from server.domain.fanout import fan_out, give_up_before, remaining
from server.domain.outcomes import Outcome, RuleResult
from server.domain.requests import check_count, check_target, parse_rules, rule_texts
from server.domain.rights import Rights
from server.domain.service_view import rule_result
from server.domain.settings import Settings
from server.domain.spans import NO_TRACING, in_rule_span, settled_span
from server.kube.deployments import DeploymentSource, DirectReads
from server.kube.errors import KubeAlreadyExists, KubeError, KubeInvalid, KubeNotFound
from server.kube.services import owned_by, owner_uid, same_service
from server.manifests import iter_services
from server.rules import RuleError, ServiceRule, ServiceType

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ExposeRequest:
    """A request in domain terms: each rule is compact text, a structured rule still to be
    checked, or the RuleError that turning its protobuf spec into a rule already raised."""

    namespace: str
    deployment: str
    rules: Sequence[str | ServiceRule | RuleError]
    dry_run: bool = False
    # What the caller may create (the create verb, by type); None: no authorization (every
    # type allowed). See server.domain.rights.
    rights: Rights | None = None
    # Every rule parsed (Exposer.parse), one for one with rules, so that expose does not parse
    # them again; None: expose parses them.
    parsed: Sequence[ServiceRule | RuleError] | None = None


class Exposer:
    def __init__(
        self,
        cluster: Services,
        settings: Settings,
        *,
        tracer: Tracer | None = None,
        deployments: DeploymentSource | None = None,
    ) -> None:
        """cluster: where Services are created (server.kube.Kube, or a fake). tracer: where
        the span of each rule goes; None: the no-op tracer (tracing is off: spans.NO_TRACING).
        deployments: where Deployments come from; a read per request unless a watch cache is
        given."""
        self._cluster = cluster
        self._settings = settings
        self._tracer = tracer or NO_TRACING
        self._deployments = deployments or DirectReads(cluster)

    def check(self, request: ExposeRequest) -> None:
        """Refuse, before any I/O, a request that cannot be right whatever the cluster says."""
        check_target(request.namespace, request.deployment)
        check_count(len(request.rules), self._settings)

    async def parse(self, request: ExposeRequest) -> list[ServiceRule | RuleError]:
        """Every rule of the request parsed, once: hand them on as ExposeRequest.parsed (after
        authorization has looked at their types, see rule_types). Checks the request first
        (BadRequest)."""
        self.check(request)
        return await parse_rules(request.rules, self._settings)

    async def expose(
        self, request: ExposeRequest, *, caller_deadline: float | None = None
    ) -> AsyncGenerator[RuleResult, None]:
        """Yield one result per rule as each is known. caller_deadline (the caller's,
        in loop.time() terms) is when results stop being of use; the flow gives up a little before.

        Raises RequestError (before the first result) for request-level failures.
        Close the generator (contextlib.aclosing) to cancel what is still running.
        """
        self.check(request)
        loop = asyncio.get_running_loop()
        started = loop.time()
        # Parsing and building run in slices (server.domain.cooperative): the largest request
        # takes a few hundred milliseconds of CPU, which must not keep other calls waiting.
        parsed: Sequence[ServiceRule | RuleError]
        if request.parsed is None:
            parsed = await parse_rules(request.rules, self._settings)
        elif len(request.parsed) == len(request.rules):
            parsed = request.parsed
        else:
            raise ValueError("ExposeRequest.parsed must have one entry per rule")
        texts = await rule_texts(parsed)
        types = [_type_of(item) for item in parsed]
        # Rules of a type the caller may not create: index -> the permission it lacks.
        denied: dict[int, str] = {}
        if request.rights is not None:
            rights = request.rights
            denied = {
                index: refusal
                for index, rule in enumerate(parsed)
                if isinstance(rule, ServiceRule)
                and (refusal := rights.refusal("create", rule.type)) is not None
            }
            # Under authorization the caller learns nothing of the Deployment (not even
            # whether it exists) unless some rule of its may go ahead.
            if all(
                isinstance(rule, RuleError) or index in denied for index, rule in enumerate(parsed)
            ):
                for index, rule in enumerate(parsed):
                    yield self._settled(
                        _invalid(rule)
                        if isinstance(rule, RuleError)
                        else _denied(index, texts[index], denied[index], types[index])
                    )
                return
            # Denied rules are not built: they must not take a name from an allowed rule.
            parsed = [
                RuleError(index, texts[index], "type", None, denied[index])
                if index in denied
                else rule
                for index, rule in enumerate(parsed)
            ]
        deployment = await read_deployment(
            self._deployments,
            request.namespace,
            request.deployment,
            timeout=remaining(loop, caller_deadline),
        )
        # Errors found while building name field paths; those of rules written as text point
        # at the caller's own columns instead.
        written = [rule if isinstance(rule, str) else None for rule in request.rules]
        manifests = await in_slices(
            pointing.at_column(built, written[index]) if isinstance(built, RuleError) else built
            for index, built in enumerate(iter_services(parsed, deployment))
        )
        # The rules settled without an API call first, in order; then the others as each is
        # known.
        creating: list[tuple[int, Mapping[str, Any]]] = []
        for index, manifest in enumerate(manifests):
            if index in denied:
                yield self._settled(_denied(index, texts[index], denied[index], types[index]))
            elif isinstance(manifest, RuleError):
                yield self._settled(_invalid(manifest, types[index]))
            else:
                creating.append((index, manifest))

        def late(job: int) -> RuleResult:
            index, manifest = creating[job]
            return RuleResult(
                index=index,
                rule=texts[index],
                outcome=Outcome.FAILED,
                service_name=manifest["metadata"]["name"],
                error="deadline exceeded before the API server answered; the Service may "
                "or may not exist: send the request again to find out (it is idempotent)",
                reason="DeadlineExceeded",
                service_type=types[index],
            )

        jobs = [
            self._rule(request, index, texts[index], written[index], manifest, types[index],
                       caller_deadline)
            for index, manifest in creating
        ]  # fmt: skip
        async with contextlib.aclosing(
            fan_out(jobs, give_up=give_up_before(caller_deadline, started), late=late)
        ) as results:
            async for result in results:
                yield result

    def _settled(self, result: RuleResult) -> RuleResult:
        """A rule settled without an API call (invalid, denied), with its span."""
        settled_span(self._tracer, result.index, result)
        return result

    async def _rule(
        self,
        request: ExposeRequest,
        index: int,
        text: str,
        written: str | None,
        manifest: Mapping[str, Any],
        service_type: ServiceType | None,
        caller_deadline: float | None,
    ) -> RuleResult:
        """One rule's task: its Service created (or found) inside a span of its own, so the
        API calls it makes are that span's children."""
        return await in_rule_span(
            self._tracer,
            index,
            self._typed(
                self._create(
                    request, index, text, written, manifest, caller_deadline=caller_deadline
                ),
                service_type,
            ),
        )

    @staticmethod
    async def _typed(created: Awaitable[RuleResult], type_: ServiceType | None) -> RuleResult:
        """The rule's result with its Service type, which the span and the metrics read."""
        return replace(await created, service_type=type_)

    async def _create(
        self,
        request: ExposeRequest,
        index: int,
        text: str,
        written: str | None,
        manifest: Mapping[str, Any],
        *,
        caller_deadline: float | None,
    ) -> RuleResult:
        """Create the rule's Service; text is its canonical form, written the caller's own
        text when it came as text (refused fields then point at its columns)."""
        name: str = manifest["metadata"]["name"]
        loop = asyncio.get_running_loop()
        try:
            try:
                created = await self._cluster.create_service(
                    request.namespace,
                    manifest,
                    dry_run=request.dry_run,
                    timeout=remaining(loop, caller_deadline),
                )
                return rule_result(index, text, Outcome.CREATED, created, None)
            except (KubeAlreadyExists, KubeInvalid) as refused:
                # The name may be taken. Allocation is checked before names, so sending a
                # NodePort rule again is refused as "port already allocated" (by our own
                # Service) rather than AlreadyExists: either way, look at that Service.
                try:
                    existing = await self._cluster.read_service(
                        request.namespace, name, timeout=remaining(loop, caller_deadline)
                    )
                except KubeNotFound:
                    raise refused from None
            uid = owner_uid(manifest)
            if same_service(existing, manifest):
                return rule_result(index, text, Outcome.UNCHANGED, existing, None)
            if owned_by(existing, uid):
                problem = (
                    f'Service "{name}" already exists for this Deployment with a different '
                    f"spec; it was left untouched: delete it first, or choose another name "
                    f"with name=..."
                )
            else:
                problem = (
                    f'Service "{name}" already exists and does not belong to Deployment '
                    f'"{request.deployment}"; it was left untouched: choose another name '
                    f"with name=..."
                )
            return RuleResult(
                index, text, Outcome.CONFLICT, name, error=problem, reason="AlreadyExists"
            )
        except KubeInvalid as error:
            where = pointing.refused(index, text, written, error.causes, error.message)
            return RuleResult(
                index, text, Outcome.INVALID, name, error=str(where), reason=error.reason
            )
        except KubeError as error:
            return RuleResult(
                index, text, Outcome.FAILED, name, error=error.message, reason=error.reason
            )
        except Exception as error:  # a bug of ours must still give this rule its one result
            log.exception("rule %d %r failed unexpectedly", index, text)
            return RuleResult(
                index,
                text,
                Outcome.FAILED,
                name,
                error=f"internal error: {type(error).__name__}: {error}",
                reason="InternalError",
            )


def _invalid(error: RuleError, service_type: ServiceType | None = None) -> RuleResult:
    return RuleResult(
        index=error.index,
        rule=error.text,
        outcome=Outcome.INVALID,
        error=str(error),
        reason="RuleInvalid",
        service_type=service_type,
    )


def _denied(
    index: int, text: str, missing: str, service_type: ServiceType | None = None
) -> RuleResult:
    return RuleResult(
        index=index,
        rule=text,
        outcome=Outcome.DENIED,
        error=missing,
        reason="Forbidden",
        service_type=service_type,
    )


def _type_of(rule: ServiceRule | RuleError) -> ServiceType | None:
    return rule.type if isinstance(rule, ServiceRule) else None
