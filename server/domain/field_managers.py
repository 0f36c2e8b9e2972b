"""Server-side apply's field managers: folding the fields CreateServices set into k8sailor's
apply (who holds a field an apply conflicts on is server.kube.errors' to read:
KubeConflict.managers).

Pure: managedFields entries in, managedFields entries out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from server.kube import FIELD_MANAGER

Json = dict[str, Any]


def adopt_managed_fields(entries: Sequence[Mapping[str, Any]]) -> list[Json] | None:
    """managedFields with k8sailor's Update entries folded into its Apply entry, or None when
    there is none to fold."""
    ours = [
        e
        for e in entries
        if e.get("manager") == FIELD_MANAGER and e.get("operation") == "Update"
        and not e.get("subresource")
    ]  # fmt: skip
    if not ours:
        return None
    applied = [
        e for e in entries if e.get("manager") == FIELD_MANAGER and e.get("operation") == "Apply"
    ]
    rest = [dict(e) for e in entries if all(e is not x for x in (*ours, *applied))]
    fields: Json = {}
    for entry in (*applied, *ours):
        fields = _merge_fields(fields, entry.get("fieldsV1") or {})
    base = dict(applied[0] if applied else ours[0])
    base.update(operation="Apply", fieldsType="FieldsV1", fieldsV1=fields)
    return [*rest, base]


def _merge_fields(a: Mapping[str, Any], b: Mapping[str, Any]) -> Json:
    """The union of two fieldsV1 trees (nested maps of owned fields)."""
    merged: Json = dict(a)
    for key, value in b.items():
        if key in merged and isinstance(merged[key], Mapping) and isinstance(value, Mapping):
            merged[key] = _merge_fields(merged[key], value)
        else:
            merged[key] = value
    return merged
