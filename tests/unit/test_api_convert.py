"""server.api.convert: protobuf to domain and back, with no server: every enum both ways, and
the results of the RPCs that share a result's fields written alike."""

from __future__ import annotations

import pytest

from k8sailor.v1 import exposure_pb2 as pb
from server.api import convert
from server.domain.diff import FieldChange
from server.domain.lifecycle_results import ApplyResult, DeleteResult, ExposedService
from server.domain.outcomes import Outcome, RuleResult
from server.rules import PortRule, Protocol, RuleError, ServiceRule, ServiceType

PORTS = (
    PortRule(port=80, target_port=8080, protocol=Protocol.TCP, name="http"),
    PortRule(port=53, target_port="dns", protocol=Protocol.UDP, node_port=30053),
)


def test_every_outcome_has_its_message_value() -> None:
    for outcome in Outcome:
        message = convert.result_to_proto(RuleResult(0, "80", outcome))
        assert pb.Outcome.Name(message.outcome) == f"OUTCOME_{outcome.value}"


@pytest.mark.parametrize("type_", list(ServiceType))
def test_a_spec_of_each_type_reads_as_that_type_and_lists_back_as_it(type_: ServiceType) -> None:
    spec = pb.ServiceSpec(type=convert.exposed_to_proto(_exposed(type_)).type)
    rule = convert.spec_to_rule(0, spec)
    assert isinstance(rule, ServiceRule)
    assert rule.type is type_


def test_an_empty_rule_is_an_error_at_its_index() -> None:
    error = convert.rule_from_proto(3, pb.Rule())
    assert isinstance(error, RuleError)
    assert error.index == 3
    assert "empty" in error.message


def test_ports_keep_their_target_as_number_or_name() -> None:
    number, name = (convert.port_to_proto(port) for port in PORTS)
    assert number.WhichOneof("target_port") == "target_port_number"
    assert number.target_port_number == 8080
    assert name.WhichOneof("target_port") == "target_port_name"
    assert name.target_port_name == "dns"
    assert (name.protocol, name.node_port) == (pb.PROTOCOL_UDP, 30053)


def test_an_apply_result_has_a_create_results_fields_and_its_changes() -> None:
    result = RuleResult(
        1, "80:8080", Outcome.UPDATED, "web", "10.0.0.1", PORTS, error="", reason="Updated"
    )
    change = FieldChange("spec.ports[0].port", "81", "80")
    applied = convert.apply_result_to_proto(ApplyResult(result, (change,)))
    created = convert.result_to_proto(result)
    for field in created.DESCRIPTOR.fields:
        assert getattr(applied, field.name) == getattr(created, field.name), field.name
    assert [(c.path, c.before, c.after) for c in applied.changes] == [
        ("spec.ports[0].port", "81", "80")
    ]


def test_a_delete_result_and_a_request_to_delete() -> None:
    message = convert.delete_result_to_proto(DeleteResult("web", Outcome.NOT_FOUND, "gone", "x"))
    assert (message.service_name, message.outcome, message.error, message.reason) == (
        "web", pb.OUTCOME_NOT_FOUND, "gone", "x",
    )  # fmt: skip
    request = convert.delete_request(pb.DeleteServicesRequest(deployment="web", all=True))
    assert (request.namespace, request.deployment, request.all) == ("default", "web", True)


async def test_requests_in_domain_terms_default_the_namespace() -> None:
    rules = [pb.Rule(raw="80:8080"), pb.Rule()]
    expose = await convert.expose_request(
        pb.CreateServicesRequest(deployment="web", rules=rules, dry_run=True)
    )
    assert (expose.namespace, expose.dry_run, expose.rules[0]) == ("default", True, "80:8080")
    assert isinstance(expose.rules[1], RuleError)
    apply = await convert.apply_request(
        pb.ApplyServicesRequest(namespace="team", deployment="web", rules=rules, prune=True)
    )
    assert (apply.namespace, apply.prune, apply.force, len(apply.rules)) == ("team", True, False, 2)


def _exposed(type_: ServiceType) -> ExposedService:
    return ExposedService("web", type_, "80", "10.0.0.1", ())
