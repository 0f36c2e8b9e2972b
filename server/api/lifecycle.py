"""gRPC glue for the RPCs that manage what CreateServices made: ListServices, DeleteServices
and ApplyServices. Protobuf in, domain.lifecycle in the middle, protobuf and status codes out."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from k8sailor.v1 import exposure_pb2 as pb
from server.api import edge
from server.api.exposure import (
    ExposureServicer,
    outcome_to_proto,
    port_to_proto,
    result_to_proto,
    rule_from_proto,
    status_for,
)
from server.auth.errors import AuthError
from server.auth.gate import AccessControl
from server.auth.identity import Caller
from server.domain.cooperative import in_slices
from server.domain.create import Exposer
from server.domain.errors import RequestError, request_error
from server.domain.grants import Grant, Grants
from server.domain.lifecycle import Lifecycle
from server.domain.lifecycle_fanout import give_up_at
from server.domain.lifecycle_requests import ApplyRequest, DeleteRequest, NotPermitted
from server.domain.lifecycle_results import ApplyResult, DeleteResult, ExposedService
from server.domain.outcomes import RuleResult
from server.domain.requests import check_target
from server.kube.errors import KubeError
from server.observability.logs import Fields, trace_fields
from server.rules import ServiceType

if TYPE_CHECKING:
    from server.observability.metrics import RuleCounter

log = logging.getLogger("k8sailor.requests")

_TYPES_TO_PB = {
    ServiceType.CLUSTER_IP: pb.SERVICE_TYPE_CLUSTER_IP,
    ServiceType.HEADLESS: pb.SERVICE_TYPE_HEADLESS,
    ServiceType.NODE_PORT: pb.SERVICE_TYPE_NODE_PORT,
    ServiceType.LOAD_BALANCER: pb.SERVICE_TYPE_LOAD_BALANCER,
    ServiceType.EXTERNAL_NAME: pb.SERVICE_TYPE_EXTERNAL_NAME,
}

Domain = TypeVar("Domain")
Message = TypeVar("Message")


def exposed_to_proto(service: ExposedService) -> pb.ExposedService:
    return pb.ExposedService(
        name=service.name,
        type=_TYPES_TO_PB[service.type],
        rule=service.rule,
        cluster_ip=service.cluster_ip,
        ports=[port_to_proto(port) for port in service.ports],
    )


def delete_result_to_proto(result: DeleteResult) -> pb.DeleteServicesResponse:
    return pb.DeleteServicesResponse(
        service_name=result.service_name,
        outcome=outcome_to_proto(result.outcome),
        error=result.error,
        reason=result.reason,
    )


def apply_result_to_proto(applied: ApplyResult) -> pb.ApplyServicesResponse:
    base = result_to_proto(applied.result)
    return pb.ApplyServicesResponse(
        index=base.index,
        rule=base.rule,
        outcome=base.outcome,
        service_name=base.service_name,
        cluster_ip=base.cluster_ip,
        ports=base.ports,
        error=base.error,
        reason=base.reason,
        changes=[
            pb.FieldChange(path=change.path, before=change.before, after=change.after)
            for change in applied.changes
        ],
    )


def _give_up(seconds_left: float | None) -> float | None:
    return give_up_at(asyncio.get_running_loop(), seconds_left)


def _status(error: Exception) -> tuple[grpc.StatusCode, str]:
    if isinstance(error, NotPermitted):
        return grpc.StatusCode.PERMISSION_DENIED, str(error)
    if isinstance(error, KubeError):  # server.domain.lifecycle lets these through as they came
        error = request_error(error)
    return status_for(error)


# The Service types a Service can have: what list and delete may meet.
_EVERY_TYPE = frozenset(ServiceType)


class LifecycleServicer(ExposureServicer):
    """The whole ExposureService: CreateServices (ExposureServicer) and the lifecycle RPCs.

    With authorization on, each RPC asks what CreateServices asks, with its own verbs on
    k8sailor.io services/<type>: list for ListServices, delete for DeleteServices, and for
    ApplyServices create (a new Service), update (an existing one) and, with prune, delete.
    """

    def __init__(
        self,
        exposer: Exposer,
        lifecycle: Lifecycle,
        access: AccessControl | None = None,
        *,
        on_results: RuleCounter | None = None,
    ) -> None:
        """on_results: told every request's rule results and the RPC's name, as the request
        ends (metrics.count_rules)."""
        super().__init__(exposer, access, on_results=on_results)
        self._lifecycle = lifecycle
        self._count_rules = on_results

    async def ListServices(  # noqa: N802 - the RPC's name
        self,
        request: pb.ListServicesRequest,
        context: grpc.aio.ServicerContext[pb.ListServicesRequest, pb.ListServicesResponse],
    ) -> pb.ListServicesResponse:
        started = time.monotonic()
        call = _Call(
            "ListServices", request.namespace or "default", request.deployment, edge.caller()
        )
        status, message, listed = grpc.StatusCode.OK, "", []
        try:
            check_target(call.namespace, call.deployment)
            await self._authorize(call, context, _every("list"))
            listed = await self._lifecycle.list_owned(
                call.namespace,
                call.deployment,
                grants=call.grants,
                deadline=_give_up(context.time_remaining()),
            )
        except (RequestError, KubeError, AuthError) as error:
            status, message = _status(error)
        except Exception as error:  # a bug of ours: logged in full, reported in one sentence
            log.exception("ListServices failed unexpectedly")
            status, message = grpc.StatusCode.INTERNAL, f"internal error: {error}"
        _log_line(
            call.event, call.caller, call.namespace, call.deployment, status, message, started,
            context, services=len(listed),
        )  # fmt: skip
        if status is not grpc.StatusCode.OK:
            await context.abort(status, message)
        return pb.ListServicesResponse(services=[exposed_to_proto(s) for s in listed])

    async def DeleteServices(  # type: ignore[override]  # noqa: N802 - see CreateServices
        self,
        request: pb.DeleteServicesRequest,
        context: grpc.aio.ServicerContext[pb.DeleteServicesRequest, pb.DeleteServicesResponse],
    ) -> None:
        domain = DeleteRequest(
            namespace=request.namespace or "default",
            deployment=request.deployment,
            names=list(request.names),
            all=request.all,
            dry_run=request.dry_run,
        )

        async def start(call: _Call) -> AsyncGenerator[DeleteResult, None]:
            self._lifecycle.check_delete(domain)
            await self._authorize(call, context, _every("delete"))
            return self._lifecycle.delete(
                dataclasses.replace(domain, grants=call.grants),
                deadline=_give_up(context.time_remaining()),
            )

        call = _Call("DeleteServices", domain.namespace, domain.deployment, edge.caller())
        await self._stream(
            call, start, delete_result_to_proto, lambda result: result, context,
            dry_run=domain.dry_run,
        )  # fmt: skip

    async def ApplyServices(  # type: ignore[override]  # noqa: N802 - see CreateServices
        self,
        request: pb.ApplyServicesRequest,
        context: grpc.aio.ServicerContext[pb.ApplyServicesRequest, pb.ApplyServicesResponse],
    ) -> None:
        domain = ApplyRequest(
            namespace=request.namespace or "default",
            deployment=request.deployment,
            # In slices, as CreateServices reads them: many thousand ports, in a large request.
            rules=await in_slices(
                rule_from_proto(index, rule) for index, rule in enumerate(request.rules)
            ),
            prune=request.prune,
            force=request.force,
            dry_run=request.dry_run,
        )

        async def start(call: _Call) -> AsyncGenerator[ApplyResult, None]:
            # Parsed once, after the caller is known and before what it may do is asked:
            # authorization decides on the rules' types, and apply builds from the same rules.
            self._lifecycle.check_apply(domain)
            parsed = await self._lifecycle.parse(domain)
            # With no rule that parses there is no type to ask about, and asking about none
            # would let anyone read the Deployment: ask about every type instead.
            types = parsed.types or _EVERY_TYPE
            wanted = {(verb, t) for verb in ("create", "update") for t in types}
            if domain.prune:
                wanted |= _every("delete")
            await self._authorize(call, context, wanted)
            return self._lifecycle.apply(
                dataclasses.replace(domain, grants=call.grants),
                parsed,
                deadline=_give_up(context.time_remaining()),
            )

        call = _Call("ApplyServices", domain.namespace, domain.deployment, edge.caller())
        await self._stream(
            call, start, apply_result_to_proto, lambda applied: applied.result, context,
            dry_run=domain.dry_run, prune=domain.prune, force=domain.force,
        )  # fmt: skip

    async def _authorize(
        self, call: _Call, context: grpc.aio.ServicerContext[Any, Any], wanted: set[Grant]
    ) -> None:
        """With authorization on, what of wanted the caller may do (call.grants)."""
        if self._access is not None and self._access.authorizing:
            call.grants = await self._access.grants(
                call.caller, call.namespace, call.deployment, wanted
            )

    async def _stream(
        self,
        call: _Call,
        start: Callable[[_Call], Awaitable[AsyncGenerator[Domain, None]]],
        to_proto: Callable[[Domain], Message],
        fate: Callable[[Domain], RuleResult | DeleteResult],
        context: grpc.aio.ServicerContext[Any, Message],
        **flags: bool,
    ) -> None:
        """Start the domain generator, write each result as it comes; end with the status for
        a request-level failure. One log line and the rules' counts at the end, whatever it was.

        Writing through context.write() closes the domain generator (and cancels what it still
        runs) as soon as the caller goes away, as CreateServices does."""
        started = time.monotonic()
        fates: list[RuleResult | DeleteResult] = []
        status, message = grpc.StatusCode.OK, ""
        try:
            async with contextlib.aclosing(await start(call)) as run:
                async for result in run:
                    fates.append(fate(result))
                    await context.write(to_proto(result))
        except (RequestError, KubeError, AuthError) as error:
            status, message = _status(error)
        except asyncio.CancelledError:
            status, message = grpc.StatusCode.CANCELLED, "the caller went away"
            raise
        except Exception as error:  # a bug of ours: logged in full, reported in one sentence
            log.exception("%s failed unexpectedly", call.event)
            status, message = grpc.StatusCode.INTERNAL, f"internal error: {error}"
        finally:
            outcomes = Counter(result.outcome.value for result in fates)
            _log_line(call.event, call.caller, call.namespace, call.deployment, status, message,
                      started, context, outcomes=dict(outcomes), **flags)  # fmt: skip
            if self._count_rules is not None:
                self._count_rules(fates, call.event)
        if status is not grpc.StatusCode.OK:
            await context.abort(status, message)


@dataclass(slots=True)
class _Call:
    """One lifecycle call, for the log line and the counts."""

    event: str  # the RPC's name
    namespace: str
    deployment: str
    caller: Caller  # as the edge authenticated it
    grants: Grants | None = None


def _every(verb: str) -> set[Grant]:
    return {(verb, t) for t in _EVERY_TYPE}


def _log_line(
    event: str,
    caller: Caller,
    namespace: str,
    deployment: str,
    status: grpc.StatusCode,
    message: str,
    started: float,
    context: grpc.aio.ServicerContext[Any, Any],
    **extra: object,
) -> None:
    """One structured line per request, as CreateServices logs it."""
    line = {
        "event": event,
        "user": caller.user,
        "groups": list(caller.groups),
        "authn": caller.method.value,
        "namespace": namespace,
        "deployment": deployment,
        "status": status.name,
        "message": message,
        "ms": round((time.monotonic() - started) * 1000, 1),
        **extra,
        "peer": context.peer(),
        **trace_fields(),
    }
    log.info(Fields(line))
