"""What server.kube reads of an answer, once: the typed errors' attributes, watch events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import cast

import aiohttp
import pytest

from server.kube.answers import MAX_EVENT_BYTES, Json, events
from server.kube.errors import (
    KubeConflict,
    KubeError,
    KubeGone,
    KubeInvalid,
    LoadSignal,
    conflicting_managers,
    from_response,
    from_transport,
    from_watch_error,
    load_signal,
)


def status(code: int, reason: str, message: str) -> bytes:
    body = {"kind": "Status", "code": code, "reason": reason, "message": message}
    return json.dumps(body).encode()


def test_an_apply_conflict_names_the_field_managers_that_own_the_fields() -> None:
    message = (
        'Apply failed with 2 conflicts: conflicts with "kubectl-edit" using v1:\n'
        '- .spec.type\nconflict with "helm" using v1: .spec.ports\n'
        'conflict with "kubectl-edit" using v1: .spec.selector'
    )
    error = from_response(409, status(409, "Conflict", message))
    assert isinstance(error, KubeConflict)
    assert error.managers == ("kubectl-edit", "helm")
    assert conflicting_managers(message) == ["kubectl-edit", "helm"]


def test_a_stale_resource_version_is_a_conflict_that_names_no_manager() -> None:
    error = from_response(409, status(409, "Conflict", "the object has been modified"))
    assert isinstance(error, KubeConflict)
    assert error.managers == ()


@pytest.mark.parametrize(
    ("message", "immutable"),
    [
        ("spec.clusterIPs[0]: Invalid value: []string{...}: may not change once set", True),
        ("spec.selector: Invalid value: ...: field is immutable", True),
        ("spec.ports[0].port: Invalid value: 0: must be between 1 and 65535", False),
    ],
)
def test_validation_says_whether_it_refused_a_change_to_an_immutable_field(
    message: str, immutable: bool
) -> None:
    error = from_response(422, status(422, "Invalid", message))
    assert isinstance(error, KubeInvalid)
    assert error.immutable is immutable


def test_410_is_gone_as_an_answer_and_as_a_watch_event() -> None:
    assert isinstance(from_response(410, status(410, "Expired", "too old")), KubeGone)
    gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
    assert isinstance(from_watch_error(gone), KubeGone)
    other = from_watch_error({"kind": "Status", "code": 500, "message": "etcd is down"})
    assert type(other) is KubeError
    assert other.message == "the watch ended with an error: etcd is down"


def test_only_a_failure_to_connect_at_all_cannot_have_applied() -> None:
    refused = aiohttp.ClientConnectorError(
        aiohttp.client_reqrep.ConnectionKey("h", 1, False, True, None, None, None),
        OSError(111, "refused"),
    )
    assert not from_transport(refused).may_have_applied
    assert not from_transport(aiohttp.ConnectionTimeoutError()).may_have_applied
    assert from_transport(aiohttp.ServerDisconnectedError()).may_have_applied
    assert from_transport(TimeoutError()).may_have_applied
    # An answer, whatever it says, is the API server's decision: it was heard.
    assert not from_response(500, b"").may_have_applied


@pytest.mark.parametrize(
    ("code", "signal"),
    [
        (200, LoadSignal.MEASURED),
        (404, LoadSignal.MEASURED),
        (429, LoadSignal.THROTTLED),
        (503, LoadSignal.THROTTLED),
        (500, LoadSignal.NONE),
        (None, LoadSignal.NONE),
    ],
)
def test_what_an_answer_says_of_the_api_servers_load(code: int | None, signal: LoadSignal) -> None:
    assert load_signal(code) is signal


class Chunks:
    """A stream that gives the chunks it was made with, as aiohttp's iter_any does."""

    def __init__(self, *chunks: bytes) -> None:
        self._chunks = chunks

    async def iter_any(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


def event_of(size: int) -> bytes:
    """A watch event of exactly size bytes, valid JSON."""
    head, tail = b'{"type": "ADDED", "object": {"pad": "', b'"}}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


async def read_events(*chunks: bytes) -> list[Json]:
    return [event async for event in events(cast(aiohttp.StreamReader, Chunks(*chunks)))]


async def test_a_watch_event_a_chunk_completes_is_refused_when_over_the_bound() -> None:
    # 3 MiB - 1 bytes unfinished (under the bound), then 2 MiB ending the line: a 5 MiB
    # event, which must be refused before it is decoded, as an unfinished one is.
    line = event_of(5 * 1024 * 1024)
    first = MAX_EVENT_BYTES - 1
    with pytest.raises(KubeError, match=f"larger than {MAX_EVENT_BYTES} bytes"):
        await read_events(line[:first], line[first:] + b"\n")
    with pytest.raises(KubeError, match=f"larger than {MAX_EVENT_BYTES} bytes"):
        await read_events(b"\n" + event_of(MAX_EVENT_BYTES + 1) + b"\n")


async def test_watch_events_up_to_the_bound_are_read_however_they_are_chunked() -> None:
    small, largest = event_of(100), event_of(MAX_EVENT_BYTES)
    stream = small + b"\n\n" + largest + b"\n" + small
    assert len(await read_events(stream)) == 3
    cut = [stream[i : i + 700_000] for i in range(0, len(stream), 700_000)]
    decoded = await read_events(*cut)
    assert [event["object"]["pad"][:3] for event in decoded] == ["xxx"] * 3
    assert await read_events(*(bytes([b]) for b in small + b"\n" + small)) == [
        json.loads(small),
        json.loads(small),
    ]
