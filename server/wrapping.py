"""A grpc.aio server interceptor that wraps each method's handler once, rather than for every
call: the edge (server.api.edge), the gRPC metrics (server.observability.grpc_metrics) and the
server spans (server.observability.tracing) are such wrappers, and a wrapper made per call would
cost every call its making. `rebuilt` makes a handler around a wrapped behaviour, for all four
kinds of method."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:  # generic in grpc-stubs only
    Handler = grpc.RpcMethodHandler[Any, Any]
    ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    ServerInterceptor = grpc.aio.ServerInterceptor

# A handler's behaviour: grpc-stubs types them as synchronous, grpc.aio's are coroutine
# functions, or async generator functions for a response stream.
Behavior = Callable[..., Any]


def rebuilt(
    handler: Handler, wrap: Callable[[Behavior], Behavior], *, reads_request: bool = False
) -> Handler:
    """A handler of the same kind as handler (request and response, one message or a stream),
    with its serializers, whose behaviour is wrap(handler's behaviour).

    With reads_request, handler's request is one message and the new handler's is a stream of
    undecoded messages (bytes), for a wrapper that reads and decodes that message itself
    (server.api.reading).
    """
    requests, responses = handler.request_streaming, handler.response_streaming
    if requests and responses:
        behavior = handler.stream_stream
    elif requests:
        behavior = handler.stream_unary
    elif responses:
        behavior = handler.unary_stream
    else:
        behavior = handler.unary_unary
    assert behavior is not None  # the one a handler of this kind has
    wrapped = wrap(behavior)
    deserialize = handler.request_deserializer
    if reads_request:
        requests, deserialize = True, None
    codec: dict[str, Any] = {
        "request_deserializer": deserialize,
        "response_serializer": handler.response_serializer,
    }
    if requests and responses:
        return grpc.stream_stream_rpc_method_handler(wrapped, **codec)
    if requests:
        return grpc.stream_unary_rpc_method_handler(wrapped, **codec)
    if responses:
        return grpc.unary_stream_rpc_method_handler(wrapped, **codec)
    return grpc.unary_unary_rpc_method_handler(wrapped, **codec)


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
