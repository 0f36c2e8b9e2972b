"""Log lines as JSON (one object a line, for collectors) or as text (for a person at a terminal).

Every line goes through the root logger's one handler, so start-up, configuration, warnings,
errors and the libraries' own lines all come out in the chosen format. A structured line (the
request line) is logged as a Fields object: its keys become the JSON object's keys, and the
text format shows it as compact JSON, as it always has.

In JSON, a line logged while a span is current carries that span's trace_id and span_id, so a
log search and a trace search meet.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any, Final, TextIO

from opentelemetry import trace

FORMATS: Final = ("json", "text")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s %(message)s"


class Fields(Mapping[str, Any]):
    """A structured log line: JSON object keys in the JSON format, compact JSON in text.

    The fields are encoded once, when the line is first formatted: both formats use that one
    encoding, and the JSON format joins it to the line's header as text instead of copying
    the fields into a new dict to encode them again.
    """

    __slots__ = ("_encoded", "_fields")

    def __init__(self, fields: Mapping[str, Any]) -> None:
        self._fields = fields
        self._encoded: str | None = None

    def __getitem__(self, key: str) -> Any:
        return self._fields[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __contains__(self, key: object) -> bool:
        return key in self._fields

    def __str__(self) -> str:
        if self._encoded is None:
            self._encoded = _encode(self._fields)
        return self._encoded


# One encoder for every line: json.dumps with arguments builds a new JSONEncoder per call.
_encode: Final = json.JSONEncoder(separators=(",", ":"), default=str).encode


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
        head: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
        }
        fields = record.msg if isinstance(record.msg, Fields) and not record.args else None
        if fields is not None and not _HEAD.isdisjoint(fields):
            # A line whose own fields name the header's: theirs take the header's place.
            head.update(fields)
            fields = None
        elif fields is None:
            head["message"] = record.getMessage()
        tail: dict[str, Any] = {}
        for key, value in trace_fields().items():
            if key not in head and (fields is None or key not in fields):
                tail[key] = value
        if record.exc_info:
            tail["error"] = self.formatException(record.exc_info)
        if record.stack_info:
            tail["stack"] = self.formatStack(record.stack_info)
        return _joined(
            _encode(head), None if fields is None else str(fields), _encode(tail) if tail else None
        )


_HEAD: Final = frozenset({"time", "level", "logger"})


def _joined(*objects: str | None) -> str:
    """Encoded JSON objects (None: absent) as one object with all their keys in order; no key
    is in two of them."""
    members = [encoded[1:-1] for encoded in objects if encoded is not None and encoded != "{}"]
    return "{" + ",".join(members) + "}"


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
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
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
