"""server.wrapping.rebuilt: the handler it makes is of the kind it was given (or a request
stream of bytes, with reads_request), keeps the serializers, and runs the wrapped behaviour."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from server.wrapping import Behavior, rebuilt

KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


async def behavior(request: Any, context: Any) -> Any:
    return request


def decode(data: bytes) -> str:
    return data.decode()


def encode(text: str) -> bytes:
    return text.encode()


def handler_of(kind: str) -> Any:
    make = getattr(grpc, f"{kind}_rpc_method_handler")
    return make(behavior, request_deserializer=decode, response_serializer=encode)


def wrapped_by(seen: list[Behavior]) -> Any:
    def wrap(inner: Behavior) -> Behavior:
        seen.append(inner)

        async def outer(request: Any, context: Any) -> AsyncIterator[Any]:
            yield await inner(request, context)

        return outer

    return wrap


@pytest.mark.parametrize("kind", KINDS)
def test_keeps_the_kind_and_the_serializers(kind: str) -> None:
    seen: list[Behavior] = []
    handler = handler_of(kind)

    made = rebuilt(handler, wrapped_by(seen))

    assert seen == [behavior]
    assert (made.request_streaming, made.response_streaming) == (
        handler.request_streaming,
        handler.response_streaming,
    )
    assert made.request_deserializer is decode
    assert made.response_serializer is encode
    assert getattr(made, kind).__name__ == "outer"
    assert [k for k in KINDS if getattr(made, k) is not None] == [kind]


@pytest.mark.parametrize(
    ("kind", "becomes"), [("unary_unary", "stream_unary"), ("unary_stream", "stream_stream")]
)
def test_reads_request_makes_a_request_stream_of_bytes(kind: str, becomes: str) -> None:
    seen: list[Behavior] = []

    made = rebuilt(handler_of(kind), wrapped_by(seen), reads_request=True)

    assert seen == [behavior]
    assert made.request_streaming
    assert made.request_deserializer is None  # the wrapper decodes the message itself
    assert made.response_serializer is encode
    assert [k for k in KINDS if getattr(made, k) is not None] == [becomes]
    assert getattr(made, becomes).__name__ == "outer"
