"""A caller's text is bounded in the request log, whatever RPC carries it: a real server and
channel, a name of megabytes of astral characters, and the JSON line the collector would read."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from k8sailor.v1 import exposure_pb2 as pb
from k8sailor.v1 import exposure_pb2_grpc as pb_grpc
from server.observability.logs import LINE_LIMIT, JsonFormatter

HUGE = "\U0001f600" * (4 * 1024 * 1024)  # 4 Mi astral characters: 50 MiB as escaped JSON
# Names as large as a request may carry: for CreateServices both together under gRPC's 4 MiB
# (4 bytes a character in UTF-8; 5.6 MiB each as escaped JSON), for ListServices under the
# 64 KiB the edge takes in one (190 KB as escaped JSON).
NAME = "\U0001f600" * (480 * 1024)
LIST_NAME = "\U0001f600" * 16_000


@pytest.fixture
def request_lines() -> Iterator[io.StringIO]:
    """Every request line, formatted as --log-format json writes it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("k8sailor.requests")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _line(stream: io.StringIO) -> tuple[str, dict[str, Any]]:
    [line] = stream.getvalue().splitlines()
    return line, json.loads(line)


async def test_a_huge_namespace_and_deployment_give_a_bounded_create_line(
    target: str, request_lines: io.StringIO
) -> None:
    request = pb.CreateServicesRequest(
        namespace=NAME, deployment=NAME, rules=[pb.Rule(raw="80")] * 3
    )
    async with grpc.aio.insecure_channel(target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            async for _ in pb_grpc.ExposureServiceStub(channel).CreateServices(request):
                pass
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    text, line = _line(request_lines)
    assert len(text) < 8 * 1024
    assert line["event"] == "CreateServices"
    marker = f"…({len(NAME)} characters)"
    assert line["namespace"] == NAME[:64] + marker
    assert line["deployment"] == NAME[:64] + marker
    # The audit fields, none renamed or lost.
    assert {
        "user", "groups", "authn", "denied", "namespace", "deployment", "rules", "dry_run",
        "status", "message", "ms", "outcomes", "results", "peer",
    } <= set(line)  # fmt: skip
    assert line["rules"] == 3
    assert line["status"] == "INVALID_ARGUMENT"
    assert line["user"] == "system:anonymous"
    assert line["peer"].startswith("ipv4:127.0.0.1:")
    assert marker in line["message"]


async def test_a_huge_deployment_gives_a_bounded_list_line(
    target: str, namespace: str, request_lines: io.StringIO
) -> None:
    request = pb.ListServicesRequest(namespace=namespace, deployment=LIST_NAME)
    async with grpc.aio.insecure_channel(target) as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await pb_grpc.ExposureServiceStub(channel).ListServices(request)
    text, line = _line(request_lines)
    assert len(text) < 8 * 1024
    assert line["event"] == "ListServices"
    assert line["namespace"] == namespace
    assert line["deployment"] == LIST_NAME[:64] + f"…({len(LIST_NAME)} characters)"
    assert line["status"] == "INVALID_ARGUMENT"


def test_every_json_line_is_bounded_whoever_writes_it() -> None:
    """A plain line whose message quotes a caller's text, with a traceback quoting it too."""
    try:
        raise ValueError(HUGE)
    except ValueError as error:
        record = logging.LogRecord(
            "k8sailor", logging.ERROR, __file__, 1, "rule %r failed", (HUGE,), (
                type(error), error, error.__traceback__,
            ),
        )  # fmt: skip
    text = JsonFormatter().format(record)
    assert len(text) <= LINE_LIMIT
    line = json.loads(text)
    assert line["message"].startswith("rule '\U0001f600")
    assert line["message"].endswith(f"…({len(record.getMessage())} characters)")
    assert record.exc_info is not None
    traceback = logging.Formatter().formatException(record.exc_info)
    assert line["error"].startswith(f"({len(traceback)} characters)…")
    assert line["error"].endswith("\U0001f600")
