"""What the caller may do to the Deployment's Services, as server.auth decided it: the plain
data the list, delete and apply flows check each Service against."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass

from server.rules import ServiceType

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


def refusal(grants: Grants | None, verb: str, type_: ServiceType) -> str | None:
    """The refusal of a pair that was decided before the request reached us."""
    if grants is None:
        return None
    if (verb, type_) not in grants.decided:
        # A pair nobody asked about is not an allowed one: fail closed (a bug of ours).
        return f"{verb} on {type_.value} Services was not authorized for this request"
    return grants.denied.get((verb, type_))
