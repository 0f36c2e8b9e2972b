"""The gRPC edge: what every call passes before its request is read.

A server interceptor turns each ExposureService handler into one that reads its request
message itself (server.api.reading), and then, in this order:

  1. the caller is authenticated from the call's context (server.auth.gate): a call that
     proves nothing when an identity is needed ends UNAUTHENTICATED before a byte of its
     request is read;
  2. the call's API calls are given their turn for API call slots (server.kube.fairness):
     the caller's share, the one the reviews made for it take too (app.py makes one Shares
     for both); without an identity, a share of the request's own;
  3. the request message is received, as bytes, within server.api.reading.RECEIVE_SECONDS;
  4. its size, its rules (or names) and each rule's ports are checked on the wire, without
     decoding anything (server.api.wire.check);
  5. only then is it decoded, and the servicer runs, with the caller at hand (caller()).

The same interceptor bounds the calls that need no identity (health Check and Watch,
server.api.identity_free), and when authorization is on, reflection serves only callers who
authenticate. On the wire nothing changes: a caller sends its one request message as before.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Final

from google.protobuf.message import DecodeError

from server.api.identity_free import MAX_HEALTH_WATCHES, MAX_IDENTITY_FREE_CALLS, Cap, bounded
from server.api.reading import Context, read_by_edge, receive
from server.api.requestlog import Call, Details, log_request
from server.api.status import Status, status_for
from server.api.wire import EXPOSURE_SERVICE, SHAPES, Refused, Shape, check, malformed
from server.auth.errors import AuthError
from server.auth.gate import AccessControl
from server.auth.identity import ANONYMOUS, Caller
from server.kube.fairness import Shares, new_share, use_share
from server.wrapping import Behavior, WrappingInterceptor, rebuilt

if TYPE_CHECKING:  # generic in grpc-stubs only
    from server.api.reading import Handler

REFLECTION_PREFIX: Final = "/grpc.reflection."

_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("k8sailor_caller")


def caller() -> Caller:
    """The caller of the RPC being handled, as the edge authenticated it (ANONYMOUS when the
    server has no access control at all). Only inside a handler the edge wrapped."""
    try:
        return _caller.get()
    except LookupError:
        raise RuntimeError("caller() outside an RPC admitted by server.api.edge.Edge") from None


class Edge(WrappingInterceptor):
    """Authentication, size and count limits before decoding, for every ExposureService RPC;
    and the bounds on the streams that need no identity. Install it last (innermost), so that
    the metrics and tracing interceptors count and trace what it refuses."""

    def __init__(self, access: AccessControl | None, max_rules: int, shares: Shares) -> None:
        """access None: no access control at all (every caller is ANONYMOUS). shares: one
        turn per caller (see _admit), the same Shares that access's reviews take theirs from."""
        super().__init__()
        self._access = access
        self._max_rules = max_rules
        self._watch_cap = Cap(MAX_HEALTH_WATCHES)
        self._identity_free = Cap(MAX_IDENTITY_FREE_CALLS)
        self._shares = shares

    def wrap(self, method: str, handler: Handler) -> Handler:
        shape = SHAPES.get(method)
        if shape is not None:
            deserialize = handler.request_deserializer

            async def admit(context: Context) -> Any:
                return await self._admit(method, shape, deserialize, context)

            return read_by_edge(handler, admit)
        if method.startswith(f"/{EXPOSURE_SERVICE}/"):
            # An RPC of ours with no Shape would go unauthenticated: refuse to serve it.
            raise LookupError(f"server.api.wire.SHAPES has no limits for {method}")
        if method.startswith(REFLECTION_PREFIX) and self._access is not None:
            return self._authenticated_stream(handler)
        return bounded(method, handler, self._watch_cap, self._identity_free)

    # ------------------------------------------------------------------ ExposureService

    async def _admit(
        self,
        method: str,
        shape: Shape,
        deserialize: Callable[[bytes], Any] | None,
        context: Context,
    ) -> Any:
        """The request, decoded once the caller is authenticated and it is within the limits
        (caller() is then set for the servicer); otherwise the call is logged and aborted."""
        started, size = time.monotonic(), 0
        try:
            who = ANONYMOUS
            if self._access is not None:
                try:
                    who = await self._access.authenticate(context)
                except AuthError as error:
                    status = status_for(error)
                    raise Refused(status.code, status.message) from error
            _caller.set(who)
            # Whose turn this call's API calls take (server.kube.fairness), set here for every RPC:
            # a caller's requests share one turn, so opening more requests at once buys no
            # more of the API server (its own priority and fairness goes by user too). Without
            # an identity (authorization off), each request is its own.
            if who is ANONYMOUS:
                new_share(method.rsplit("/", 1)[-1])
            else:
                use_share(self._shares.get(who.user))
            raw = await receive(context)
            size = len(raw)
            check(method, shape, raw, self._max_rules)
            return raw if deserialize is None else deserialize(raw)
        except DecodeError:
            refused = malformed()
        except Refused as error:
            refused = error
        _log_refusal(method, refused, size, started, context)
        await context.abort(refused.code, refused.message)
        raise AssertionError("unreachable: abort raises")

    # ---------------------------------------------------------------------- reflection

    def _authenticated_stream(self, handler: Handler) -> Handler:
        """A bidi stream (reflection) that starts only for a caller who authenticates, when
        authorization needs an identity (authenticate() asks for none otherwise)."""
        access = self._access
        if access is None or handler.stream_stream is None:
            return handler

        def authenticating(behavior: Behavior) -> Behavior:
            async def authenticated(requests: Any, context: Context) -> AsyncIterator[Any]:
                try:
                    await access.authenticate(context)
                except AuthError as error:
                    status = status_for(error)
                    await context.abort(status.code, status.message)
                async for response in behavior(requests, context):
                    yield response

            return authenticated

        return rebuilt(handler, authenticating)


def _log_refusal(
    method: str, refused: Refused, size: int, started: float, context: Context
) -> None:
    """The request's one log line, for a call refused before the servicer saw it: who (when
    known), what status, how big; never what the request held, which was not decoded."""
    try:
        who = _caller.get()
    except LookupError:
        who = ANONYMOUS
    call = Call(method.rsplit("/", 1)[1], namespace="", deployment="", caller=who, started=started)
    log_request(
        call, Status(refused.code, refused.message), context.peer(), Details(became={"bytes": size})
    )
