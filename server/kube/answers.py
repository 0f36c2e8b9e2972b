"""Reading what the API server sends: an answer's body and a watch's events, bounded.

What comes from the network is bounded before memory or CPU is spent on it: an answer is
refused unread beyond its bound, and each watch event before it is decoded. Answers are
decoded as plain JSON dicts (server.kube.client says why not the library's model classes).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import aiohttp

from server.kube.errors import KubeError, KubeServerError, from_transport

__all__ = ["MAX_ANSWER_BYTES", "MAX_EVENT_BYTES", "Json", "events", "json_object", "read_bounded"]

Json = dict[str, Any]

# The most k8sailor reads of one answer: far above any Service or Deployment (the API server
# itself refuses objects over 1.5 MiB), room for a list of thousands of them.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
# A watch event is one object; etcd refuses objects over 1.5 MiB, so twice that is plenty.
MAX_EVENT_BYTES = 3 * 1024 * 1024


async def read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The answer's body, refused unread beyond limit bytes."""
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > limit:
        raise _too_large(response.status, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise _too_large(response.status, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(status: int, limit: int) -> KubeServerError:
    return KubeServerError(
        f"the API server's answer (HTTP {status}) is larger than the {limit} bytes k8sailor "
        f"reads; it was refused unread",
        status=status,
        reason="AnswerTooLarge",
    )


def json_object(raw: bytes, what: str) -> Json:
    """raw decoded as the JSON object the API server sends, or KubeError naming what it was."""
    try:
        decoded = json.loads(raw)
    except ValueError as error:
        raise KubeError(f"unreadable {what}: {raw[:200]!r}") from error
    if not isinstance(decoded, dict):
        raise KubeError(f"unexpected {what}: {raw[:200]!r}")
    return decoded


async def events(stream: aiohttp.StreamReader) -> AsyncGenerator[Json, None]:
    """A watch's events ({"type": ..., "object": ...}), each bounded before it is decoded."""
    try:
        async for line in _lines(stream, MAX_EVENT_BYTES):
            yield json_object(line, "watch event")
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        raise from_transport(error) from error


async def _lines(stream: aiohttp.StreamReader, limit: int) -> AsyncIterator[bytes]:
    """Newline-separated records of a stream, none longer than limit bytes.

    Each line is measured before it is sliced out or decoded, so that a line which a chunk
    completes is refused as surely as one still unfinished; only the new bytes are searched
    for a newline, so a long line costs linear time however it is chunked.
    """
    pending = bytearray()
    async for chunk in stream.iter_any():
        searched = len(pending)  # pending holds no newline (the loop below consumed them)
        pending += chunk
        start = 0
        while (end := pending.find(b"\n", max(start, searched))) >= 0:
            if end - start > limit:
                raise _event_too_large(limit)
            line = bytes(pending[start:end])
            start = end + 1
            if line.strip():
                yield line
        del pending[:start]
        if len(pending) > limit:
            raise _event_too_large(limit)
    if pending.strip():
        yield bytes(pending)


def _event_too_large(limit: int) -> KubeError:
    return KubeError(f"a watch event is larger than {limit} bytes; the watch was dropped")
