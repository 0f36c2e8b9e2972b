"""Field paths, ours and the API server's, turned into columns of the caller's text."""

from __future__ import annotations

import pytest

from server.domain.pointing import at_column, refused, rule_path
from server.kube.errors import Cause
from server.rules import RuleError


@pytest.mark.parametrize(
    ("api_field", "ours"),
    [
        ("metadata.name", "name"),
        ("spec.externalName", "external_name"),
        ("spec.ports[0].port", "ports[0].port"),
        ("spec.ports[2].targetPort", "ports[2].target_port"),
        ("spec.ports[1].nodePort", "ports[1].node_port"),
        ("spec.ports[0].protocol", "ports[0].protocol"),
        ("spec.ports[0].name", "ports[0].name"),
        ("spec.ports[0].appProtocol", "ports[0].app_protocol"),
        ("spec.ports[0].frobnicate", None),
        ("spec.selector", None),
        ("spec.ports", None),
        ("", None),
    ],
)
def test_api_field_paths_become_rule_paths(api_field: str, ours: str | None) -> None:
    assert rule_path(api_field) == ours


def test_a_text_rule_is_pointed_at_its_column() -> None:
    error = RuleError(3, "web=80:8088,81:admin", "ports[1].target_port", None, "no such port")
    pointed = at_column(error, " web = 80:8088, 81:admin")
    assert (pointed.text, pointed.where, pointed.column) == (
        " web = 80:8088, 81:admin",
        "column 20",
        20,
    )
    assert str(pointed) == 'rule 3 " web = 80:8088, 81:admin", column 20: no such port'


def test_a_structured_spec_keeps_its_field_path() -> None:
    error = RuleError(0, "81", "ports[0].target_port", None, "no such port")
    assert at_column(error, None) is error


def test_a_path_with_no_token_in_the_text_is_the_rule_as_a_whole() -> None:
    error = RuleError(0, "web-headless=#80", "name", None, "taken")
    pointed = at_column(error, "#80")  # the derived name has no token of its own
    assert (pointed.where, pointed.column, pointed.text) == ("", None, "#80")


def test_the_api_servers_refusal_points_at_the_first_field_a_rule_sets() -> None:
    causes = (
        Cause("spec.selector", "FieldValueRequired", "Required value"),
        Cause("spec.ports[0].nodePort", "FieldValueInvalid", "provided port is already allocated"),
    )
    message = 'Service "web" is invalid: spec.ports[0].nodePort: Invalid value: 31234'
    as_text = refused(2, "!31234:80:8088", "! 31234:80:8088", causes, message)
    assert (as_text.where, as_text.column) == ("column 3", 3)
    as_spec = refused(2, "!31234:80:8088", None, causes, message)
    assert (as_spec.where, as_spec.column) == ("ports[0].node_port", None)
    unknown = refused(2, "!31234:80:8088", "!31234:80:8088", (), message)
    assert (unknown.where, unknown.column, unknown.message) == ("", None, message)
