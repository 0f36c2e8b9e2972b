"""Log lines as JSON (one object a line, for collectors) or as text (for a person at a terminal).

Every line goes through the root logger's one handler, so start-up, configuration, warnings,
errors and the libraries' own lines all come out in the chosen format. A structured line (the
request line) is logged as a Fields object: its keys become the JSON object's keys, and the
text format shows it as compact JSON, as it always has.

In JSON, a line logged while a span is current carries that span's trace_id and span_id, so a
log search and a trace search meet.

Every line is bounded, whoever wrote it: a caller may send names of megabytes (a 4 MiB
deployment name of astral characters is 50 MiB of escaped JSON), and a few such lines would
push every earlier audit line out of the kubelet's rotated log files. A string in a structured
line is at most STRING_LIMIT characters (longer: its first BRIEF_KEEP and a marker saying how
long it was, the rule request errors quote names by), long lists are cut with a marker, and the
encoded line is at most LINE_LIMIT characters (the JSON is ASCII, so characters are bytes).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import ItemsView, Iterator, Mapping
from typing import Any, Final, TextIO

from opentelemetry import trace

from server.rules.brief import BRIEF_KEEP, STRING_LIMIT, brief, length_marker

__all__ = [
    "BRIEF_KEEP",
    "FORMATS",
    "LINE_LIMIT",
    "STRING_LIMIT",
    "TEXT_FORMAT",
    "Fields",
    "JsonFormatter",
    "TextFormatter",
    "brief",
    "configure",
    "default_format",
    "length_marker",
    "trace_fields",
]

FORMATS: Final = ("json", "text")
#: The longest encoded line (ASCII, so bytes): the parts below add up to less.
LINE_LIMIT: Final = 64 * 1024
#: A structured line's fields, or a plain line's message, encoded.
_BODY_LIMIT: Final = 32 * 1024
#: A traceback (the end is kept: that is where the error is) and a stack.
_ERROR_LIMIT: Final = 16 * 1024
_STACK_LIMIT: Final = 8 * 1024
#: Lists longer than the line allows are cut to these many items, tried in turn.
_LIST_CUTS: Final = (None, 1000, 100, 10, 0)
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s %(message)s"


class Fields(Mapping[str, Any]):
    """A structured log line: JSON object keys in the JSON format, compact JSON in text
    (bounded in both, as every line is)."""

    __slots__ = ("_fields",)

    def __init__(self, fields: Mapping[str, Any]) -> None:
        self._fields = fields

    def __getitem__(self, key: str) -> Any:
        return self._fields[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __contains__(self, key: object) -> bool:
        return key in self._fields

    def items(self) -> ItemsView[str, Any]:
        return self._fields.items()

    def __str__(self) -> str:
        return _encode(_bounded_fields(self._fields))


def _encode(value: Any) -> str:
    """Compact JSON, anything that is not JSON as its str()."""
    return json.dumps(value, separators=(",", ":"), default=str)


def _fitted(text: str, budget: int, *, end: bool = False) -> str:
    """text shown so that its JSON encoding has at most budget characters (an astral
    character is 12 of them escaped); end: keep its end instead of its start."""
    keep = budget
    while True:
        if len(text) <= keep:
            shown = text
        elif end:
            shown = f"({len(text)} characters)…" + text[len(text) - keep :]
        else:
            shown = text[:keep] + length_marker(len(text))
        if len(_encode(shown)) <= budget or keep == 0:
            return shown
        keep //= 2


def _bounded(value: Any, items: int | None) -> Any:
    """value with every string in brief and every list cut to items (None: not cut); what is
    not JSON is its str(), in brief too, as the encoder would have written it."""
    if isinstance(value, str):
        return brief(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        kept = value if items is None or len(value) <= items else value[:items]
        cut = [_bounded(item, items) for item in kept]
        if len(kept) < len(value):
            cut.append(f"…({len(value)} items)")
        return cut
    if isinstance(value, Mapping):
        return {
            brief(key) if isinstance(key, str) else key: _bounded(item, items)
            for key, item in value.items()
        }
    return brief(str(value))


def _bounded_fields(fields: Mapping[str, Any], budget: int = _BODY_LIMIT) -> dict[str, Any]:
    """The fields with their strings in brief, lists cut until the encoding fits budget; if
    even that is too long (too many fields), every field is kept with a marker for a value
    that is not a number: the audit line's keys are never lost."""
    for items in _LIST_CUTS:
        bounded: dict[str, Any] = _bounded(fields, items)
        if len(_encode(bounded)) <= budget:
            return bounded
    kept = {
        brief(str(key), BRIEF_KEEP, BRIEF_KEEP): (
            value if value is None or isinstance(value, (bool, int, float)) else "…"
        )
        for key, value in fields.items()
    }
    if len(_encode(kept)) <= budget:
        return kept
    return {"fields": f"…({len(fields)} fields)"}  # no line of ours has that many


def trace_fields() -> dict[str, str]:
    """trace_id and span_id of the current span, as W3C traceparent spells them; {} when no
    trace is going on."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, then the message or the line's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
        }
        if isinstance(record.msg, Fields) and not record.args:
            # A line's own fields named like the header's take the header's place.
            line.update(_bounded_fields(record.msg))
        else:
            line["message"] = _fitted(record.getMessage(), _BODY_LIMIT)
        for key, value in trace_fields().items():
            line.setdefault(key, value)  # the line's own trace_id, if it has one, stays
        if record.exc_info:
            line["error"] = _fitted(self.formatException(record.exc_info), _ERROR_LIMIT, end=True)
        if record.stack_info:
            line["stack"] = _fitted(self.formatStack(record.stack_info), _STACK_LIMIT, end=True)
        return _encode(line)


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT, with a plain line's message and traceback bounded as in JSON (a structured
    line is its bounded fields already)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = brief(record.message, _BODY_LIMIT, _BODY_LIMIT)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:  # noqa: N802
        return _fitted(super().formatException(ei), _ERROR_LIMIT, end=True)

    def formatStack(self, stack_info: str) -> str:  # noqa: N802
        return _fitted(super().formatStack(stack_info), _STACK_LIMIT, end=True)


def _utc(created: float) -> str:
    """RFC 3339 in UTC with milliseconds: what log collectors parse without being told."""
    whole = int(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + (
        f".{int((created - whole) * 1000):03d}Z"
    )


def default_format(stream: TextIO) -> str:
    """text for a person at a terminal, json for everything else (a pod's log, a pipe)."""
    try:
        return "text" if stream.isatty() else "json"
    except ValueError:  # a closed stream
        return "json"


def configure(log_format: str, level: int, stream: TextIO | None = None) -> None:
    """Send every log line to stream (stderr) in log_format, replacing any handler before."""
    if log_format not in FORMATS:
        raise ValueError(f"{log_format!r} is not one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Python's warnings and an exception nobody caught are log lines too, not bare text
    # between JSON lines.
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught


def _log_uncaught(kind: type[BaseException], error: BaseException, tb: Any) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, tb)
        return
    logging.getLogger("k8sailor").critical("uncaught exception", exc_info=(kind, error, tb))
