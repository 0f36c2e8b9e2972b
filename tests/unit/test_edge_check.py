"""server.api.wire.check: what the edge refuses before decoding, as a plain function (the same
refusals through a real server are in tests/auth/test_edge.py)."""

from __future__ import annotations

import grpc
import pytest

from k8sailor.v1 import exposure_pb2 as pb
from server.api.wire import (
    ENVELOPE_BYTES,
    ENVELOPE_FIELDS,
    RULE_FIELDS,
    SHAPES,
    WIRE_RULE_BYTES,
    WIRE_RULE_PORTS,
    Refused,
    check,
    max_request_bytes,
)
from server.rules import MAX_PORTS, MAX_RULE_LENGTH

SERVICE = pb.DESCRIPTOR.services_by_name["ExposureService"].full_name
CREATE = f"/{SERVICE}/CreateServices"
DELETE = f"/{SERVICE}/DeleteServices"
LIST = f"/{SERVICE}/ListServices"


def refusal(method: str, request: bytes, max_rules: int = 10) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(Refused) as raised:
        check(method, SHAPES[method], request, max_rules)
    return raised.value.code, raised.value.message


def test_a_request_within_the_limits_passes() -> None:
    spec = pb.ServiceSpec(ports=[pb.ServicePort(port=80)] * MAX_PORTS)
    rules = [pb.Rule(raw="x" * MAX_RULE_LENGTH)] * 9 + [pb.Rule(spec=spec)]
    request = pb.CreateServicesRequest(namespace="default", deployment="web", rules=rules)

    check(CREATE, SHAPES[CREATE], request.SerializeToString(), 10)


def test_more_rules_or_names_than_max_rules_are_refused_by_count() -> None:
    create = pb.CreateServicesRequest(rules=[pb.Rule(raw="80")] * 11).SerializeToString()
    delete = pb.DeleteServicesRequest(names=["web"] * 11).SerializeToString()

    assert refusal(CREATE, create) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "11 rules is more than this server accepts in one request (10); split them over "
        "several requests",
    )
    assert refusal(DELETE, delete)[1].startswith("11 names is more than")


def test_a_request_of_too_many_fields_is_refused_unread() -> None:
    fields = pb.CreateServicesRequest(namespace="x").SerializeToString() * (11 + ENVELOPE_FIELDS)

    assert refusal(CREATE, fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"the request has more than {10 + ENVELOPE_FIELDS} fields: this server accepts at most "
        "10 rules in one request (--max-rules); split them over several requests",
    )


def test_a_request_larger_than_the_method_can_need_is_resource_exhausted() -> None:
    listing = pb.ListServicesRequest(deployment="x" * ENVELOPE_BYTES).SerializeToString()

    code, message = refusal(LIST, listing)

    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert message == (
        f"the request is {len(listing)} bytes; this server takes at most {ENVELOPE_BYTES} in "
        "one ListServices request"
    )


def _length_delimited(number: int, content: bytes) -> bytes:
    assert len(content) < 1 << 21
    length = bytearray()
    value = len(content)
    while value >= 0x80:
        length.append(value & 0x7F | 0x80)
        value >>= 7
    length.append(value)
    return bytes([(number << 3) | 2]) + bytes(length) + content


# A spec whose `type` comes again and again on the wire (protobuf keeps the last): fields that
# cost the walk as ports would, without being ports.
_TYPES = _length_delimited(2, b"\x10\x01" * RULE_FIELDS)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            pb.Rule(raw="x" * WIRE_RULE_BYTES).SerializeToString(),
            f"rule 1 is {WIRE_RULE_BYTES + 4} bytes encoded; a rule may be at most "
            f"{MAX_RULE_LENGTH} characters, and this server reads none over {WIRE_RULE_BYTES} "
            "bytes: split it into several rules",
        ),
        (
            pb.Rule(
                spec=pb.ServiceSpec(ports=[pb.ServicePort()] * (WIRE_RULE_PORTS + 1))
            ).SerializeToString(),
            f"rule 1 has {WIRE_RULE_PORTS + 1} ports; a rule may have at most {MAX_PORTS} ports, "
            f"and this server reads none with over {WIRE_RULE_PORTS}: split it into several rules",
        ),
        (
            _TYPES,
            f"rule 1 has more than {RULE_FIELDS} fields: a rule may have at most {MAX_PORTS} "
            "ports and few other fields",
        ),
    ],
)
def test_a_rule_far_beyond_a_rule_refuses_the_request_undecoded(rule: bytes, expected: str) -> None:
    first = pb.ApplyServicesRequest(rules=[pb.Rule(raw="80")]).SerializeToString()
    request = first + _length_delimited(3, rule)

    assert refusal(f"/{SERVICE}/ApplyServices", request, 10) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        expected,
    )


def test_grpc_may_receive_what_the_largest_request_can_need() -> None:
    assert max_request_bytes(10) == ENVELOPE_BYTES + 10 * SHAPES[CREATE].item_bytes
