"""Where in the caller's own rule a problem is: field paths turned into columns, in one place.

The pure layers (server.rules, server.manifests) name the place of a problem found after
parsing as a field path of the structured form ("ports[1].target_port"), and the API server
names the fields it refused in its Status causes ("spec.ports[1].nodePort"). A rule the caller
wrote as text is better served by the column of the token, so the domain flows turn both into
columns here, and the pure layers never need the caller's raw text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from server.kube.errors import Cause
from server.rules import RuleError, locate

# The Service fields a rule sets, as the API server spells them, and as our paths do.
_PORT_FIELDS = {
    "port": "port",
    "targetPort": "target_port",
    "nodePort": "node_port",
    "protocol": "protocol",
    "name": "name",
    "appProtocol": "app_protocol",
}
_PORT_PATH = re.compile(r"spec\.ports\[(\d{1,4})\]\.(\w+)")


def rule_path(api_field: str) -> str | None:
    """Our field path for the API server's ("spec.ports[0].nodePort" -> "ports[0].node_port"),
    or None for a field that no part of a rule sets."""
    if api_field == "metadata.name":
        return "name"
    if api_field == "spec.externalName":
        return "external_name"
    match = _PORT_PATH.fullmatch(api_field)
    if match is None:
        return None
    field = _PORT_FIELDS.get(match[2])
    return None if field is None else f"ports[{match[1]}].{field}"


def at_column(error: RuleError, written: str | None) -> RuleError:
    """error, pointing at a column of the rule as written when it came as text (its field path
    otherwise, as it is). A path with no token in the text leaves the rule as a whole."""
    if written is None or error.column is not None:
        return error
    column = locate(written, error.where) if error.where else None
    where = "" if column is None else f"column {column}"
    return RuleError(error.index, written, where, column, error.message)


def refused(
    index: int, canonical: str, written: str | None, causes: Sequence[Cause], message: str
) -> RuleError:
    """The API server's refusal of rule index, at the first refused field a rule sets: a
    column of the written text, or a field path for a structured spec."""
    for cause in causes:
        path = rule_path(cause.field)
        if path is not None:
            return at_column(RuleError(index, canonical, path, None, message), written)
    return RuleError(index, written if written is not None else canonical, "", None, message)
