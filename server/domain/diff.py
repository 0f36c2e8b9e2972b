"""What an apply changed in a Service: the fields that differ between two versions of it.

Pure: the Service before and after, as the API server answered, in; field paths with their old
and new values as text out, in a stable order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field that an apply changed (or would): values as text, "" when absent."""

    path: str
    before: str
    after: str


# What a rule decides about a Service; the rest (status, managedFields, resourceVersion, ...)
# is the API server's bookkeeping, not a change anyone asked for.
_COMPARED = (("metadata", "labels"), ("metadata", "annotations"),
             ("metadata", "ownerReferences"), ("spec",))  # fmt: skip


def diff_service(before: Mapping[str, Any], after: Mapping[str, Any]) -> Iterable[FieldChange]:
    """The fields that differ between two versions of a Service, in a stable order."""
    for path in _COMPARED:
        old: Any = before
        new: Any = after
        for key in path:
            old = old.get(key) if isinstance(old, Mapping) else None
            new = new.get(key) if isinstance(new, Mapping) else None
        yield from _diff(".".join(path), old, new)


def _diff(path: str, old: Any, new: Any) -> Iterable[FieldChange]:
    if old == new:
        return
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in sorted(set(old) | set(new)):
            yield from _diff(_field_path(path, key), old.get(key), new.get(key))
        return
    if isinstance(old, list) and isinstance(new, list):
        for i in range(max(len(old), len(new))):
            yield from _diff(
                f"{path}[{i}]",
                old[i] if i < len(old) else None,
                new[i] if i < len(new) else None,
            )
        return
    yield FieldChange(path, _text(old), _text(new))


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _field_path(path: str, key: str) -> str:
    if _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key)}]"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True)
