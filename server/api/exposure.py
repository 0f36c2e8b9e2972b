"""CreateServices: the request in domain terms, authorized on its rules' types, handed to the
exposer, and each rule's result written back as it is known."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import grpc

from k8sailor.v1 import exposure_pb2 as pb
from server.api import convert, edge
from server.api.calls import caller_deadline, run, write_each
from server.api.requestlog import Call, create_details
from server.auth.gate import AccessControl
from server.auth.identity import Caller
from server.domain.create import Exposer, ExposeRequest
from server.domain.outcomes import RuleResult
from server.domain.requests import rule_types
from server.domain.rights import Rights
from server.rules import RuleError, ServiceRule

if TYPE_CHECKING:
    from server.observability.metrics import RuleCounter

_EVENT = "CreateServices"


class ExposureServicer:
    """CreateServices (server.api.service registers it with the other RPCs of the service)."""

    def __init__(
        self,
        exposer: Exposer,
        access: AccessControl | None = None,
        *,
        count_rules: RuleCounter | None = None,
    ) -> None:
        """access: what callers may do (the edge, server.api.edge, has authenticated them with
        the same AccessControl); None: no authorization at all. count_rules: told every
        request's rule results, as the request ends (metrics)."""
        self._exposer = exposer
        self._access = access
        self._count_rules = count_rules

    async def create_services(
        self,
        request: pb.CreateServicesRequest,
        context: grpc.aio.ServicerContext[pb.CreateServicesRequest, pb.CreateServicesResponse],
    ) -> None:
        started = time.monotonic()  # reading the rules is part of the call's time
        domain = await convert.expose_request(request)
        # Authenticated by the edge (server.api.edge) before the request was decoded; so were its
        # size and its number of rules checked.
        call = Call(_EVENT, domain.namespace, domain.deployment, edge.caller(), started)
        results: list[RuleResult] = []

        async def work() -> None:
            # Parsed once, here: authorization decides on the rules' types, and the exposer
            # builds from the same parsed rules.
            parsed = await self._exposer.parse(domain)
            permissions = await self._permissions(call.caller, domain, parsed)
            ready = dataclasses.replace(domain, parsed=parsed, permissions=permissions)
            expose = self._exposer.expose(ready, caller_deadline=caller_deadline(context))
            await write_each(context, expose, convert.result_to_proto, results)

        def count() -> None:
            if self._count_rules is not None:
                self._count_rules(results, _EVENT)

        await run(
            call,
            context,
            work,
            lambda status: create_details(len(domain.rules), domain.dry_run, status, results),
            finish=count,
        )

    async def _permissions(
        self, caller: Caller, request: ExposeRequest, parsed: Sequence[ServiceRule | RuleError]
    ) -> Rights | None:
        """With authorization on, what the caller may create here; None: everything."""
        if self._access is None or not self._access.authorizing:
            return None
        # With no rule that parses, nothing is asked, and nothing is read either: the exposer
        # answers such a request from the rules alone.
        return await self._access.permissions(
            caller, request.namespace, request.deployment, rule_types(parsed)
        )
