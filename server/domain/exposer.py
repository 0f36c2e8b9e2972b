"""One CreateServices request, from rules to per-rule results, with no gRPC in sight.

The flow: check the request, parse every rule, read the Deployment once, build every manifest,
then create the Services concurrently and yield each rule's result the moment it is known.
Each rule runs in its own coroutine that turns every failure into a RuleResult, so one bad rule
never cancels the others, and every rule gets exactly one result, even when the caller's
deadline passes first.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import typing
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from opentelemetry.trace import Span, Status, StatusCode, Tracer

from server.domain import pointing
from server.domain.cooperative import in_slices
from server.kube import Kube
from server.kube.deployments import DeploymentSource, DirectReads
from server.kube.errors import (
    KubeAlreadyExists,
    KubeError,
    KubeForbidden,
    KubeInvalid,
    KubeNotFound,
    KubeUnavailable,
)
from server.manifests import Deployment, DeploymentError, iter_services, owned_by, same_service
from server.rules import (
    DEFAULT_EXTERNAL_NAMES,
    DEFAULT_NODE_PORTS,
    ExternalNamePolicy,
    NodePortRange,
    PortRule,
    Protocol,
    RuleError,
    ServiceRule,
    ServiceType,
    dns1123_label_problem,
    dns1123_subdomain_problem,
    parse_any,
)
from server.rules.brief import BRIEF_KEEP, STRING_LIMIT, length_marker

log = logging.getLogger(__name__)


def _deadline_margin(budget: float) -> float:
    """How long before the caller's deadline to stop waiting and write the unfinished rules'
    results, so they reach the caller before its deadline closes the stream: a tenth of the
    time the request was given, at least 50 ms (a busy host) and at most half a second."""
    return min(max(budget * 0.1, 0.05), 0.5)


class Outcome(enum.Enum):
    CREATED = "CREATED"
    UNCHANGED = "UNCHANGED"
    INVALID = "INVALID"
    CONFLICT = "CONFLICT"
    FAILED = "FAILED"
    DENIED = "DENIED"  # the caller may not create a Service of this rule's type here
    # What server.domain.lifecycle reports for apply and delete.
    UPDATED = "UPDATED"
    DELETED = "DELETED"
    NOT_FOUND = "NOT_FOUND"


@dataclass(frozen=True, slots=True)
class RuleResult:
    """What became of one rule; ports are as the cluster has them, node ports filled in."""

    index: int
    rule: str
    outcome: Outcome
    service_name: str = ""
    cluster_ip: str = ""
    ports: tuple[PortRule, ...] = ()
    error: str = ""
    reason: str = ""
    service_type: ServiceType | None = None  # None: refused before its type was known

    @property
    def ok(self) -> bool:
        return self.outcome in (Outcome.CREATED, Outcome.UNCHANGED)


class RequestError(Exception):
    """The request as a whole cannot be served; no rule was attempted."""


class BadRequest(RequestError):
    """Empty, oversized, or naming an impossible namespace or Deployment."""


class DeploymentNotFound(RequestError):
    pass


class DeploymentUnusable(RequestError):
    """The Deployment exists but cannot be exposed (e.g. a selector without matchLabels)."""


class ClusterForbidden(RequestError):
    """The API server (403) does not let k8sailor itself do what the request needs."""


class ClusterUnavailable(RequestError):
    """The API server could not be reached, kept throttling, or refused k8sailor's own
    credentials, for as long as the caller's deadline allowed retrying."""


class ClusterFailed(RequestError):
    """The API server failed in any other way."""


def request_error(error: KubeError, doing: str = "") -> RequestError:
    """A request-level Kubernetes failure as the exposer's own error, so that the layers above
    never need to know Kubernetes' error kinds. doing says what was being done, if known."""
    if isinstance(error, KubeForbidden):
        during = f" {doing}" if doing else ""
        return ClusterForbidden(f"the API server refused k8sailor{during}: {error.message}")
    if isinstance(error, KubeUnavailable):
        return ClusterUnavailable(f"{doing}: {error.message}" if doing else error.message)
    during = f" {doing}" if doing else ""
    return ClusterFailed(f"the API server failed{during}: {error.message}")


@dataclass(frozen=True, slots=True)
class Settings:
    max_rules: int = 256
    node_ports: NodePortRange = DEFAULT_NODE_PORTS
    # Where ExternalName Services may point (--cluster-domain, --allow-external-name).
    external_names: ExternalNamePolicy = DEFAULT_EXTERNAL_NAMES


@dataclass(frozen=True, slots=True)
class Permissions:
    """What the caller may create, decided before the request reaches the exposer (by
    server.auth): each Service type it may not create, with the permission it lacks, in words
    for the rule's error. Types not listed are allowed."""

    denied: Mapping[ServiceType, str]


@dataclass(frozen=True, slots=True)
class ExposeRequest:
    """A request in domain terms: each rule is compact text, a structured rule still to be
    checked, or the RuleError that turning its protobuf spec into a rule already raised."""

    namespace: str
    deployment: str
    rules: Sequence[str | ServiceRule | RuleError]
    dry_run: bool = False
    # None: no authorization (every type allowed). See Permissions.
    permissions: Permissions | None = None
    # Every rule parsed (Exposer.parse), one for one with rules, so that expose does not parse
    # them again; None: expose parses them.
    parsed: Sequence[ServiceRule | RuleError] | None = None


def check_target(namespace: str, deployment: str) -> None:
    """Refuse a namespace or Deployment name that no object can have (BadRequest)."""
    problem = dns1123_label_problem(namespace)
    if problem is not None:
        raise BadRequest(
            f"namespace {_quoted(namespace)} is not a valid namespace name (a lowercase "
            f"DNS-1123 label): it {problem}"
        )
    if not deployment:
        raise BadRequest("deployment is required")
    problem = dns1123_subdomain_problem(deployment)
    if problem is not None:
        raise BadRequest(
            f"deployment {_quoted(deployment)} is not a valid Deployment name (a lowercase "
            f"DNS-1123 subdomain): it {problem}"
        )


async def parse_rules(
    rules: Sequence[str | ServiceRule | RuleError], settings: Settings
) -> list[ServiceRule | RuleError]:
    """Every rule parsed, in slices (server.domain.cooperative): the largest request takes a few
    hundred milliseconds of CPU, which must not keep other calls waiting."""
    node_ports, external_names = settings.node_ports, settings.external_names
    return await in_slices(
        parse_any(rule, index, node_ports, external_names) for index, rule in enumerate(rules)
    )


def rule_types(parsed: Iterable[ServiceRule | RuleError]) -> frozenset[ServiceType]:
    """The Service types the valid rules ask for: what authorization decides on."""
    return frozenset(rule.type for rule in parsed if isinstance(rule, ServiceRule))


class Exposer:
    def __init__(
        self,
        kube: Kube,
        settings: Settings,
        *,
        tracer: Tracer | None = None,
        deployments: DeploymentSource | None = None,
    ) -> None:
        """tracer: where the span of each rule goes; None: no spans (tracing is off, and
        costs nothing). deployments: where Deployments come from; a GET per request unless a
        watch cache is given."""
        self._kube = kube
        self._settings = settings
        self._tracer = tracer
        self._deployments = deployments or DirectReads(kube)

    def check(self, request: ExposeRequest) -> None:
        """Refuse, before any I/O, a request that cannot be right whatever the cluster says."""
        check_target(request.namespace, request.deployment)
        count = len(request.rules)
        if count == 0:
            raise BadRequest("no rules: send at least one rule")
        if count > self._settings.max_rules:
            raise BadRequest(
                f"{count} rules is more than this server accepts in one request "
                f"({self._settings.max_rules}); split them over several requests"
            )

    async def parse(self, request: ExposeRequest) -> list[ServiceRule | RuleError]:
        """Every rule of the request parsed, once: hand them on as ExposeRequest.parsed (after
        authorization has looked at their types, see rule_types). Checks the request first
        (BadRequest); the edge (server.api.edge) has refused an oversized one before it was decoded,
        this is the same bound for callers that build an ExposeRequest themselves."""
        self.check(request)
        return await parse_rules(request.rules, self._settings)

    async def expose(
        self, request: ExposeRequest, *, deadline: float | None = None
    ) -> AsyncGenerator[RuleResult, None]:
        """Yield one result per rule as each is known. deadline is in loop.time() terms.

        Raises RequestError (before the first result) for request-level failures.
        Close the generator (contextlib.aclosing) to cancel what is still running.
        """
        self.check(request)
        loop = asyncio.get_running_loop()
        started = loop.time()
        # Parsing and building run in slices (server.domain.cooperative): the largest request takes
        # a few hundred milliseconds of CPU, which must not keep other calls waiting.
        parsed: Sequence[ServiceRule | RuleError]
        if request.parsed is None:
            parsed = await parse_rules(request.rules, self._settings)
        elif len(request.parsed) == len(request.rules):
            parsed = request.parsed
        else:
            raise ValueError("ExposeRequest.parsed must have one entry per rule")
        texts = await in_slices(
            item.text if isinstance(item, RuleError) else item.canonical() for item in parsed
        )
        types = [_type_of(item) for item in parsed]
        # Rules of a type the caller may not create: index -> the permission it lacks.
        denied: dict[int, str] = {}
        if request.permissions is not None:
            lacking = request.permissions.denied
            denied = {
                index: lacking[rule.type]
                for index, rule in enumerate(parsed)
                if isinstance(rule, ServiceRule) and rule.type in lacking
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
        deployment = await self._read_deployment(request, _remaining(loop, deadline))
        # Errors found while building name field paths; those of rules written as text point
        # at the caller's own columns instead.
        written = [rule if isinstance(rule, str) else None for rule in request.rules]
        manifests = await in_slices(
            pointing.at_column(built, written[index]) if isinstance(built, RuleError) else built
            for index, built in enumerate(iter_services(parsed, deployment))
        )

        give_up = None if deadline is None else deadline - _deadline_margin(deadline - started)
        tasks: dict[asyncio.Task[RuleResult], tuple[int, str, str]] = {}
        # Each task puts itself here when done: one callback per task, where asyncio.wait()
        # on the pending set after every result costs O(N) per result, O(N^2) per request.
        finished: asyncio.Queue[asyncio.Task[RuleResult]] = asyncio.Queue()
        try:
            for index, manifest in enumerate(manifests):
                if index in denied:
                    yield self._settled(_denied(index, texts[index], denied[index], types[index]))
                    continue
                if isinstance(manifest, RuleError):
                    yield self._settled(_invalid(manifest, types[index]))
                    continue
                coroutine = self._rule(
                    request, index, texts[index], written[index], manifest, types[index], deadline
                )
                task = asyncio.create_task(coroutine)
                task.add_done_callback(finished.put_nowait)
                tasks[task] = (index, texts[index], manifest["metadata"]["name"])
            pending = set(tasks)
            while pending:
                if not finished.empty():
                    task = finished.get_nowait()
                elif give_up is None:
                    task = await finished.get()
                else:
                    timeout = give_up - loop.time()
                    if timeout <= 0:
                        break
                    try:
                        async with asyncio.timeout(timeout):
                            task = await finished.get()
                    except TimeoutError:
                        break
                pending.discard(task)
                yield task.result()
            # Rules that finished while we stopped waiting still get their real result.
            while not finished.empty():
                task = finished.get_nowait()
                if task in pending:
                    pending.discard(task)
                    yield task.result()
            for task in pending:
                task.cancel()
            for task in pending:
                index, text, name = tasks[task]
                yield RuleResult(
                    index=index,
                    rule=text,
                    outcome=Outcome.FAILED,
                    service_name=name,
                    error="deadline exceeded before the API server answered; the Service may "
                    "or may not exist: send the request again to find out (it is idempotent)",
                    reason="DeadlineExceeded",
                    service_type=types[index],
                )
        finally:
            # No task outlives the request, whether it ended, failed or was cancelled.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _read_deployment(self, request: ExposeRequest, timeout: float | None) -> Deployment:
        try:
            return await self._deployments.get(
                request.namespace, request.deployment, timeout=timeout
            )
        except KubeNotFound as error:
            raise DeploymentNotFound(
                f'Deployment "{request.deployment}" not found in namespace '
                f'"{request.namespace}" ({error.message})'
            ) from error
        except KubeError as error:
            doing = f'reading Deployment "{request.deployment}"'
            raise request_error(error, doing) from error
        except DeploymentError as error:
            raise DeploymentUnusable(str(error)) from error

    def _settled(self, result: RuleResult) -> RuleResult:
        """A rule settled without an API call (invalid, denied): its span, started and ended."""
        if self._tracer is not None:
            _end_rule_span(self._tracer.start_span(_RULE_SPAN), result)
        return result

    async def _rule(
        self,
        request: ExposeRequest,
        index: int,
        text: str,
        written: str | None,
        manifest: Mapping[str, Any],
        service_type: ServiceType | None,
        deadline: float | None,
    ) -> RuleResult:
        """One rule's task: its Service created (or found) inside a span of its own, so the
        API calls it makes are that span's children."""
        if self._tracer is None:
            result = await self._create(request, index, text, written, manifest, deadline=deadline)
            return replace(result, service_type=service_type)
        with self._tracer.start_as_current_span(_RULE_SPAN) as span:
            result = await self._create(request, index, text, written, manifest, deadline=deadline)
            result = replace(result, service_type=service_type)
            _end_rule_span(span, result, end=False)
        return result

    async def _create(
        self,
        request: ExposeRequest,
        index: int,
        text: str,
        written: str | None,
        manifest: Mapping[str, Any],
        *,
        deadline: float | None,
    ) -> RuleResult:
        """Create the rule's Service; text is its canonical form, written the caller's own
        text when it came as text (refused fields then point at its columns)."""
        name: str = manifest["metadata"]["name"]
        loop = asyncio.get_running_loop()
        try:
            try:
                created = await self._kube.create_service(
                    request.namespace,
                    manifest,
                    dry_run=request.dry_run,
                    timeout=_remaining(loop, deadline),
                )
                return _from_service(index, text, Outcome.CREATED, created)
            except (KubeAlreadyExists, KubeInvalid) as refused:
                # The name may be taken. Allocation is checked before names, so sending a
                # NodePort rule again is refused as "port already allocated" (by our own
                # Service) rather than AlreadyExists: either way, look at that Service.
                try:
                    existing = await self._kube.read_service(
                        request.namespace, name, timeout=_remaining(loop, deadline)
                    )
                except KubeNotFound:
                    raise refused from None
            uid = manifest["metadata"]["ownerReferences"][0]["uid"]
            if same_service(existing, manifest):
                return _from_service(index, text, Outcome.UNCHANGED, existing)
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


def _quoted(name: str) -> str:
    """A name for a request-level error, bounded: the status message is sent back in a
    trailer, and a hostile request may send a name of megabytes."""
    # The log lines' rule (server.observability.logs.brief), so an error and its line agree.
    if len(name) <= STRING_LIMIT:
        return repr(name)
    return repr(name[:BRIEF_KEEP]) + length_marker(len(name))


def _remaining(loop: asyncio.AbstractEventLoop, deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return max(deadline - loop.time(), 0.001)


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


_RULE_SPAN = "k8sailor.rule"


class RuleOutcome(typing.Protocol):  # (rules has a Protocol of its own: TCP, UDP)
    """What became of a rule, or of a Service named in a request: what its span says."""

    @property
    def outcome(self) -> Outcome: ...
    @property
    def reason(self) -> str: ...
    @property
    def service_name(self) -> str: ...
    @property
    def service_type(self) -> ServiceType | None: ...


def describe_rule_span(span: Span, index: int, result: RuleOutcome) -> None:
    """What became of the rule, as the rule span's attributes (names, not the caller's text:
    a rule can be long, and the result in the log has it). Every RPC's rule spans say it the
    same way."""
    if not span.is_recording():
        return
    span.set_attributes(
        {
            "k8sailor.rule.index": index,
            "k8sailor.rule.outcome": result.outcome.value,
            "k8sailor.rule.reason": result.reason,
            "k8sailor.service.name": result.service_name,
            "k8sailor.service.type": result.service_type.value if result.service_type else "",
        }
    )
    if result.outcome is Outcome.FAILED:
        span.set_status(Status(StatusCode.ERROR, result.reason or "failed"))


def _end_rule_span(span: Span, result: RuleResult, *, end: bool = True) -> None:
    describe_rule_span(span, result.index, result)
    if end:
        span.end()


def _from_service(
    index: int, text: str, outcome: Outcome, service: Mapping[str, Any]
) -> RuleResult:
    spec = service.get("spec") or {}
    ports = tuple(
        PortRule(
            port=int(port["port"]),
            target_port=port.get("targetPort", port["port"]),
            protocol=Protocol(port.get("protocol", "TCP")),
            node_port=port.get("nodePort"),
            app_protocol=port.get("appProtocol"),
            name=port.get("name"),
        )
        for port in spec.get("ports") or ()
    )
    return RuleResult(
        index=index,
        rule=text,
        outcome=outcome,
        service_name=str(service.get("metadata", {}).get("name", "")),
        cluster_ip=str(spec.get("clusterIP") or ""),
        ports=ports,
    )
