"""The JSON log line as text: the formatter joins encoded pieces instead of building one dict,
and these check that what comes out is exactly the one JSON object that dict would have been,
keys in the same order, for every kind of line."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from server.observability.logs import LINE_LIMIT, Fields, JsonFormatter, TextFormatter

FIELDS = {
    "event": "CreateServices",
    "user": "system:anonymous",
    "groups": ["system:unauthenticated"],
    "message": 'quote " and newline \n and ünïcode',
    "outcomes": {"CREATED": 1},
    "results": [{"index": 0, "outcome": "CREATED", "service": "web"}],
    "ms": 1.5,
    "other": object(),  # not JSON: written as its str()
}


def _record(msg: object, exc_info: Any = None) -> logging.LogRecord:
    return logging.LogRecord("k8sailor.requests", logging.INFO, __file__, 1, msg, None, exc_info)


def _pairs(text: str) -> list[tuple[str, Any]]:
    """The line's keys and values in order; fails on a key written twice in any object."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        assert len(keys) == len(set(keys)), keys
        return dict(pairs)

    line: dict[str, Any] = json.loads(text, object_pairs_hook=no_duplicates)
    return list(line.items())


def _head(line: list[tuple[str, Any]]) -> list[str]:
    return [key for key, _ in line[:3]]


def test_a_structured_line_is_header_then_its_fields_in_order() -> None:
    record = _record(Fields(FIELDS))
    line = _pairs(JsonFormatter().format(record))
    assert _head(line) == ["time", "level", "logger"]
    assert [key for key, _ in line[3:]] == list(FIELDS)
    values = dict(line)
    assert values["message"] == FIELDS["message"]
    assert values["other"] == str(FIELDS["other"])
    assert values["results"] == FIELDS["results"]


def test_the_text_format_and_the_json_format_show_the_same_fields() -> None:
    fields = Fields(FIELDS)
    JsonFormatter().format(_record(fields))
    assert json.loads(str(fields)) == {**FIELDS, "other": str(FIELDS["other"])}
    assert " " not in str(Fields({"a": [1, 2], "b": {"c": 3}}))  # compact, as always


def test_fields_named_like_the_header_take_its_place() -> None:
    line = _pairs(JsonFormatter().format(_record(Fields({"event": "x", "level": "AUDIT"}))))
    assert [key for key, _ in line] == ["time", "level", "logger", "event"]
    assert dict(line)["level"] == "AUDIT"


def test_an_empty_structured_line_is_the_header_alone() -> None:
    line = _pairs(JsonFormatter().format(_record(Fields({}))))
    assert [key for key, _ in line] == ["time", "level", "logger"]


def test_a_line_in_a_span_carries_its_ids_after_the_fields_unless_it_has_them() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("request") as span:
        ids = span.get_span_context()
        plain = _pairs(JsonFormatter().format(_record(Fields({"event": "x"}))))
        own = _pairs(
            JsonFormatter().format(_record(Fields({"trace_id": "mine", "span_id": "mine"})))
        )
        message = _pairs(JsonFormatter().format(_record("hello")))
    assert plain[3:] == [
        ("event", "x"),
        ("trace_id", f"{ids.trace_id:032x}"),
        ("span_id", f"{ids.span_id:016x}"),
    ]
    assert own[3:] == [("trace_id", "mine"), ("span_id", "mine")]
    assert [key for key, _ in message] == [
        "time", "level", "logger", "message", "trace_id", "span_id",
    ]  # fmt: skip


@pytest.mark.parametrize("msg", ["failed", Fields({"event": "x"})])
def test_an_error_comes_last_with_its_traceback(msg: object) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = _record(msg, sys.exc_info())
    line = _pairs(JsonFormatter().format(record))
    key, error = line[-1]
    assert key == "error"
    assert "RuntimeError: boom" in error


def test_a_long_list_is_cut_with_a_marker_to_keep_the_line_bounded() -> None:
    results = [{"index": i, "outcome": "CREATED", "service": "s" * 60} for i in range(5000)]
    text = JsonFormatter().format(_record(Fields({"event": "x", "results": results})))
    line = dict(_pairs(text))
    assert len(text) <= LINE_LIMIT
    assert line["results"][:-1] == results[: len(line["results"]) - 1]
    assert line["results"][-1] == "…(5000 items)"


def test_too_many_long_fields_keep_their_keys_and_numbers() -> None:
    fields = {f"field{i}": "\U0001f600" * 300 for i in range(100)} | {"rules": 3}
    text = JsonFormatter().format(_record(Fields(fields)))
    assert len(text) <= LINE_LIMIT
    line = dict(_pairs(text))
    assert list(line)[3:] == list(fields)
    assert line["rules"] == 3


def test_the_text_format_bounds_a_plain_line_too() -> None:
    huge = "\x1b" * 1_000_000
    record = logging.LogRecord("k8sailor", logging.INFO, __file__, 1, "got %s", (huge,), None)
    text = TextFormatter().format(record)
    assert len(text) < LINE_LIMIT
    assert text.endswith("…(1000004 characters)")


@pytest.mark.parametrize("long", ["s" * 257, '"' * 200 + "s" * 57, "\U0001f600" * 300])
def test_a_long_string_deep_in_a_line_is_in_brief_too(long: str) -> None:
    fields = {"event": "x", "results": [{"index": 0, "error": long}], "short": "s" * 256}
    line = dict(_pairs(JsonFormatter().format(_record(Fields(fields)))))
    assert line["results"] == [{"index": 0, "error": long[:64] + f"…({len(long)} characters)"}]
    assert line["short"] == "s" * 256
