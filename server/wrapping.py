"""A grpc.aio server interceptor that wraps each method's handler once, rather than for every
call: the edge (server.api.edge) and the gRPC metrics (server.observability.grpc_metrics) are both
such wrappers, and a wrapper made per call would cost every call its making."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:  # generic in grpc-stubs only
    Handler = grpc.RpcMethodHandler[Any, Any]
    ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    ServerInterceptor = grpc.aio.ServerInterceptor


class WrappingInterceptor(ServerInterceptor):
    """Serves each method through wrap(method, handler), made the first time the method is
    called with that handler. Bounded: only methods the server has a handler for get here."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    def wrap(self, method: str, handler: Handler) -> Handler:
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:  # no such method: gRPC answers UNIMPLEMENTED on its own
            return handler
        method: str = handler_call_details.method  # "/k8sailor.v1.ExposureService/..."
        known = self._wrapped.get(method)
        if known is None or known[0] is not handler:
            known = self._wrapped[method] = (handler, self.wrap(method, handler))
        return known[1]
