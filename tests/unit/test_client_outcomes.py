"""The Python client reads every outcome a server may send, also ones newer than itself."""

from __future__ import annotations

from client import Deleted, Outcome, Result
from k8sailor.v1 import exposure_pb2 as pb


def test_every_outcome_of_the_proto_has_a_name_in_the_client() -> None:
    for name, value in pb.Outcome.items():
        if value != pb.OUTCOME_UNSPECIFIED:
            assert Outcome(value).name == name.removeprefix("OUTCOME_")


def test_an_outcome_from_a_newer_server_is_unknown_and_not_ok() -> None:
    # An open proto3 enum carries values this client was not built with.
    future = pb.Outcome.ValueType(99)
    result = Result.from_proto(pb.ApplyServicesResponse(index=0, outcome=future))
    deleted = Deleted.from_proto(pb.DeleteServicesResponse(service_name="a", outcome=future))

    assert (result.outcome, result.ok) == (Outcome.UNKNOWN, False)
    assert (deleted.outcome, deleted.ok) == (Outcome.UNKNOWN, False)


def test_apply_results_carry_their_changes() -> None:
    message = pb.ApplyServicesResponse(
        index=0,
        outcome=pb.OUTCOME_UPDATED,
        changes=[pb.FieldChange(path="spec.ports[0].port", before="80", after="81")],
    )

    result = Result.from_proto(message)

    assert result.ok
    assert [(c.path, c.before, c.after) for c in result.changes] == [
        ("spec.ports[0].port", "80", "81")
    ]
