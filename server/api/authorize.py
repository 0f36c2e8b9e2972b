"""What the caller of an RPC may do, asked of server.auth by every servicer the same way: the
verb and Service type pairs the RPC needs, answered as the value the domain flows read
(server.domain.rights.Rights)."""

from __future__ import annotations

from collections.abc import Collection

from server.api.requestlog import Call
from server.auth.gate import NONE_ALLOWED, AccessControl
from server.auth.rights import Grant, Grants


async def rights(
    access: AccessControl | None,
    call: Call,
    wanted: Collection[Grant],
    *,
    none_allowed: str = NONE_ALLOWED,
) -> Grants | None:
    """With authorization on, what of wanted the caller may do; None: everything.
    none_allowed: how a caller allowed none of it is refused (AccessControl.rights)."""
    if access is None or not access.authorizing:
        return None
    return await access.rights(
        call.caller, call.namespace, call.deployment, wanted, none_allowed=none_allowed
    )
