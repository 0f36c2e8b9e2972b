"""server.edge.count_field: the rules of a request counted on the wire, as protobuf would
decode them, without decoding them."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from k8sailor.v1 import exposure_pb2 as pb
from server.edge import SHAPES, Refused, count_field

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
