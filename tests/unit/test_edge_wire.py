"""server.api.wire.count_field: the rules of a request counted on the wire, as protobuf would
decode them, without decoding them."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from k8sailor.v1 import exposure_pb2 as pb
from server.api.wire import SHAPES, Refused, RuleShape, count_field, rule_shapes

rules = st.lists(
    st.one_of(
        st.builds(pb.Rule, raw=st.text(max_size=20)),
        st.builds(
            pb.Rule,
            spec=st.builds(
                pb.ServiceSpec,
                name=st.text(max_size=5),
                ports=st.lists(st.builds(pb.ServicePort, port=st.integers(0, 2**31 - 1))),
            ),
        ),
        st.just(pb.Rule()),
    ),
    max_size=30,
)


@given(
    rules,
    st.text(max_size=70),
    st.text(max_size=300),
    st.booleans(),
)
def test_the_count_is_what_protobuf_decodes(
    listed: list[pb.Rule], namespace: str, deployment: str, dry_run: bool
) -> None:
    request = pb.CreateServicesRequest(
        namespace=namespace, deployment=deployment, rules=listed, dry_run=dry_run
    )
    data = request.SerializeToString()

    assert count_field(data, 3, 1000) == (
        len(pb.CreateServicesRequest.FromString(data).rules),
        True,
    )


def test_the_count_stops_reading_after_the_limit() -> None:
    data = pb.CreateServicesRequest(rules=[pb.Rule()] * 10).SerializeToString()

    assert count_field(data, 3, 4) == (4, False)
    assert count_field(data, 3, 10) == (10, True)


@pytest.mark.parametrize(
    "data",
    [
        b"\x1a",  # a tag, and no length
        b"\x1a\x05ab",  # a length beyond the end
        b"\x0f",  # wire type 7
        b"\x00\x00",  # field 0
        b"\x08" + b"\xff" * 11,  # a varint longer than 64 bits
    ],
)
def test_bytes_that_are_not_a_message_are_refused(data: bytes) -> None:
    with pytest.raises(Refused) as raised:
        count_field(data, 3, 1000)

    assert raised.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.message == "the request is not a valid protobuf message"


def test_every_exposure_rpc_has_its_limits() -> None:
    # An RPC without a Shape would reach its servicer unauthenticated by the edge.
    service = pb.DESCRIPTOR.services_by_name["ExposureService"]

    assert set(SHAPES) == {f"/{service.full_name}/{method.name}" for method in service.methods}


specs = st.builds(
    pb.ServiceSpec,
    name=st.text(max_size=5),
    ports=st.lists(st.builds(pb.ServicePort, name=st.text(max_size=3)), max_size=40),
)


@given(st.lists(st.lists(specs, min_size=1, max_size=4), max_size=8), st.text(max_size=20))
def test_the_ports_are_what_protobuf_decodes_even_from_repeated_specs(
    copies: list[list[pb.ServiceSpec]], namespace: str
) -> None:
    # Each rule on the wire as several copies of its (singular) spec field, which protobuf
    # merges into one spec holding all their ports.
    encoded = [b"".join(pb.Rule(spec=spec).SerializeToString() for spec in rule) for rule in copies]
    head = pb.CreateServicesRequest(namespace=namespace).SerializeToString()
    data = head + b"".join(_length_delimited(3, rule) for rule in encoded)
    decoded = pb.CreateServicesRequest.FromString(data).rules

    shapes = list(rule_shapes(data, 3, 1 << 20, 1 << 20))

    assert shapes == [
        RuleShape(len(rule), len(message.spec.ports), True)
        for rule, message in zip(encoded, decoded, strict=True)
    ]


@given(rules)
def test_the_length_of_every_rule_is_its_encoded_size(listed: list[pb.Rule]) -> None:
    data = pb.ApplyServicesRequest(namespace="default", rules=listed).SerializeToString()

    shapes = list(rule_shapes(data, 3, 1 << 20, 1 << 20))

    assert [shape.length for shape in shapes] == [rule.ByteSize() for rule in listed]
    assert [shape.ports for shape in shapes] == [len(rule.spec.ports) for rule in listed]


def test_a_rule_longer_than_allowed_is_not_read() -> None:
    spec = pb.ServiceSpec(ports=[pb.ServicePort()] * 10)
    data = pb.CreateServicesRequest(rules=[pb.Rule(spec=spec)]).SerializeToString()

    assert list(rule_shapes(data, 3, 21, 1000)) == [RuleShape(22, 0, False)]
    assert list(rule_shapes(data, 3, 22, 1000)) == [RuleShape(22, 10, True)]


def test_the_walk_of_a_rule_stops_after_its_field_budget() -> None:
    # 1 field for the spec itself, then its ports: the budget spans both levels.
    spec = pb.ServiceSpec(ports=[pb.ServicePort()] * 10)
    data = pb.CreateServicesRequest(rules=[pb.Rule(spec=spec)]).SerializeToString()

    assert list(rule_shapes(data, 3, 1000, 5)) == [RuleShape(22, 4, False)]
    assert list(rule_shapes(data, 3, 1000, 11)) == [RuleShape(22, 10, True)]


@pytest.mark.parametrize(
    "rule",
    [
        b"\x12",  # a spec's tag, and no length
        b"\x12\x05\x1a",  # a spec longer than its rule
        b"\x12\x02\x1a\x05",  # a port longer than its spec
        b"\x12\x01\x0f",  # wire type 7 inside the spec
    ],
)
def test_a_rule_that_is_not_a_message_is_refused(rule: bytes) -> None:
    data = _length_delimited(3, rule)

    with pytest.raises(Refused) as raised:
        list(rule_shapes(data, 3, 1000, 1000))

    assert raised.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.message == "the request is not a valid protobuf message"


def _length_delimited(number: int, content: bytes) -> bytes:
    return _varint((number << 3) | 2) + _varint(len(content)) + content


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
