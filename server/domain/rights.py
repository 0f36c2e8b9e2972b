"""What the caller may do, as the flows see it: one verb (list, create, update, delete) on
Services of one type at a time.

server.auth decides (with SubjectAccessReviews) before a request reaches the domain, and hands
over a value of this shape: structurally, since auth does not import the domain (its value is
server.auth.rights.Grants). No rights at all (None) means authorization is off."""

from __future__ import annotations

import typing
from collections.abc import Collection, Mapping

from server.rules import ServiceType

# A verb on Services of one type.
Grant = tuple[str, ServiceType]

# What asking more pairs gave: the refusal, in words, of each pair the caller may not do (the
# others allowed), and why none could be decided if the cluster could not be asked ("" when
# they were): a rule that needs them then FAILS (AuthUnavailable), it is not DENIED.
Asked = tuple[Mapping[Grant, str], str]


class Rights(typing.Protocol):
    def refusal(self, verb: str, type_: ServiceType) -> str | None:
        """Why the caller may not do verb on Services of type_, in words for the rule's
        error; None: it may. For the pairs decided before the request reached the domain: a
        pair nobody asked about is refused (fail closed: it would be a bug of ours)."""
        ...

    async def refusals(self, wanted: Collection[Grant]) -> Asked:
        """The refusal of each pair of wanted the caller may not do, asking (through the same
        cache) the pairs that only the cluster's state made relevant: a change of type needs
        delete on the Service's old type, known once it is read."""
        ...
