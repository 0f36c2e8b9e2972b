"""The RPCs that manage what CreateServices made: ListServices, DeleteServices and
ApplyServices. Protobuf in (server.api.convert), server.domain.lifecycle in the middle.

With authorization on, each RPC asks what CreateServices asks, with its own verbs on
k8sailor.io services/<type>: list for ListServices, delete for DeleteServices, and for
ApplyServices create (a new Service), update (an existing one) and, with prune, delete.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Collection
from typing import TYPE_CHECKING

import grpc

from k8sailor.v1 import exposure_pb2 as pb
from server.api import convert, edge
from server.api.calls import caller_deadline, run, write_each
from server.api.requestlog import Call, Details, outcomes
from server.api.status import Status
from server.auth.gate import AccessControl
from server.auth.rights import Grant, Grants
from server.domain.lifecycle import Lifecycle
from server.domain.lifecycle_results import ApplyResult, DeleteResult, ExposedService
from server.domain.requests import check_target
from server.rules import ServiceType

if TYPE_CHECKING:
    from server.observability.metrics import CountedResult, RuleCounter

# The Service types a Service can have: what list and delete may meet.
_EVERY_TYPE = frozenset(ServiceType)


def _every(verb: str) -> set[Grant]:
    return {(verb, t) for t in _EVERY_TYPE}


class LifecycleServicer:
    """ListServices, DeleteServices and ApplyServices (server.api.service registers them with
    CreateServices)."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        access: AccessControl | None = None,
        *,
        count_rules: RuleCounter | None = None,
    ) -> None:
        """access: as for server.api.exposure.ExposureServicer. count_rules: told every
        request's rule results and the RPC's name, as the request ends (metrics.count_rules)."""
        self._lifecycle = lifecycle
        self._access = access
        self._count_rules = count_rules

    async def list_services(
        self,
        request: pb.ListServicesRequest,
        context: grpc.aio.ServicerContext[pb.ListServicesRequest, pb.ListServicesResponse],
    ) -> pb.ListServicesResponse:
        namespace = convert.namespace_of(request)
        call = Call("ListServices", namespace, request.deployment, edge.caller())
        listed: list[ExposedService] = []

        async def work() -> None:
            check_target(call.namespace, call.deployment)
            grants = await self._grants(call, _every("list"))
            listed.extend(
                await self._lifecycle.list_owned(
                    call.namespace,
                    call.deployment,
                    grants=grants,
                    caller_deadline=caller_deadline(context),
                )
            )

        await run(call, context, work, lambda _: Details(became={"services": len(listed)}))
        return convert.listed_to_proto(listed)

    async def delete_services(
        self,
        request: pb.DeleteServicesRequest,
        context: grpc.aio.ServicerContext[pb.DeleteServicesRequest, pb.DeleteServicesResponse],
    ) -> None:
        domain = convert.delete_request(request)
        call = Call("DeleteServices", domain.namespace, domain.deployment, edge.caller())
        deleted: list[DeleteResult] = []

        async def work() -> None:
            self._lifecycle.check_delete(domain)
            grants = await self._grants(call, _every("delete"))
            results = self._lifecycle.delete(
                dataclasses.replace(domain, grants=grants), caller_deadline=caller_deadline(context)
            )
            await write_each(context, results, convert.delete_result_to_proto, deleted)

        def details(_: Status) -> Details:
            return Details(became={"outcomes": outcomes(deleted), "dry_run": domain.dry_run})

        await run(call, context, work, details, finish=lambda: self._count(call, deleted))

    async def apply_services(
        self,
        request: pb.ApplyServicesRequest,
        context: grpc.aio.ServicerContext[pb.ApplyServicesRequest, pb.ApplyServicesResponse],
    ) -> None:
        started = time.monotonic()  # reading the rules is part of the call's time
        domain = await convert.apply_request(request)
        call = Call("ApplyServices", domain.namespace, domain.deployment, edge.caller(), started)
        applied: list[ApplyResult] = []

        async def work() -> None:
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
            grants = await self._grants(call, wanted)
            results = self._lifecycle.apply(
                dataclasses.replace(domain, grants=grants),
                parsed,
                caller_deadline=caller_deadline(context),
            )
            await write_each(context, results, convert.apply_result_to_proto, applied)

        def details(_: Status) -> Details:
            became = {
                "outcomes": outcomes(each.result for each in applied),
                "dry_run": domain.dry_run,
                "prune": domain.prune,
                "force": domain.force,
            }
            return Details(became=became)

        def count() -> None:
            self._count(call, [each.result for each in applied])

        await run(call, context, work, details, finish=count)

    async def _grants(self, call: Call, wanted: Collection[Grant]) -> Grants | None:
        """With authorization on, what of wanted the caller may do; None: everything."""
        if self._access is None or not self._access.authorizing:
            return None
        return await self._access.grants(call.caller, call.namespace, call.deployment, wanted)

    def _count(self, call: Call, fates: Collection[CountedResult]) -> None:
        if self._count_rules is not None:
            self._count_rules(fates, call.event)
