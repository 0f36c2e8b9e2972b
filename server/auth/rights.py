"""What server.auth decided the caller may do, as a value the domain flows read through their
protocol (server.domain.rights.Rights: structurally, auth does not import the domain)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass

from server.rules import ServiceType

# A verb (list, create, update, delete) on Services of one type.
Grant = tuple[str, ServiceType]


class RightsUnknown(Exception):
    """What the caller may do could not be asked of the cluster: nothing was decided."""


# Decides pairs that were not asked before the request reached the domain: the refusal, in
# words, of each the caller may not do (the others allowed). Raises RightsUnknown.
AskGrants = Callable[[Collection[Grant]], Awaitable[Mapping[Grant, str]]]


async def _never_asked(wanted: Collection[Grant]) -> Mapping[Grant, str]:
    raise RightsUnknown("no more rights can be asked for this request")


@dataclass(frozen=True, slots=True)
class Grants:
    """denied holds each verb and Service type pair of `decided` that the caller may not do,
    with the permission it lacks in words; the other decided pairs are allowed. Pairs that
    only the cluster's state makes relevant are asked later with `ask`."""

    denied: Mapping[Grant, str]
    decided: frozenset[Grant]
    ask: AskGrants = _never_asked

    def refusal(self, verb: str, type_: ServiceType) -> str | None:
        if (verb, type_) not in self.decided:
            # A pair nobody asked about is not an allowed one: fail closed (a bug of ours).
            return f"{verb} on {type_.value} Services was not authorized for this request"
        return self.denied.get((verb, type_))

    async def refusals(self, wanted: Collection[Grant]) -> tuple[dict[Grant, str], str]:
        undecided = [pair for pair in wanted if pair not in self.decided]
        try:
            asked = await self.ask(undecided) if undecided else {}
        except RightsUnknown as error:
            return {}, str(error)
        refused = {
            pair: refusal
            for pair in wanted
            if (refusal := self.denied.get(pair) or asked.get(pair)) is not None
        }
        return refused, ""
