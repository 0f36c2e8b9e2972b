"""The Python client reads what a newer server may send, and its CLI checks one result per rule.

A misbehaving server is the one thing a real k8sailor cannot be made to be, so the CLI tests
serve a scripted ExposureService on a real grpc.aio server and run the real `k8sailor` command.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import pytest

from client import Outcome
from client.connection import ExposedService, Port, Result
from k8sailor.v1 import exposure_pb2 as pb
from k8sailor.v1 import exposure_pb2_grpc as pb_grpc

K8SAILOR = str(Path(sys.executable).parent / "k8sailor")


def test_an_outcome_newer_than_the_client_reads_as_unknown_with_its_number() -> None:
    result = Result.from_proto(pb.CreateServicesResponse(index=3, outcome=42))  # type: ignore[arg-type]
    assert result.outcome is Outcome.UNKNOWN
    assert result.outcome_number == 42
    assert not result.ok
    assert Result.from_proto(pb.CreateServicesResponse(outcome=pb.OUTCOME_DENIED)).outcome is (
        Outcome.DENIED
    )


def test_an_unset_target_port_is_the_port_itself() -> None:
    assert Port.from_proto(pb.ServicePort(port=80)).target_port == 80
    assert Port.from_proto(pb.ServicePort(port=80, target_port_number=8080)).target_port == 8080
    assert Port.from_proto(pb.ServicePort(port=80, target_port_name="http")).target_port == "http"


def test_enum_values_newer_than_the_client_do_not_raise() -> None:
    port = Port.from_proto(pb.ServicePort(port=80, protocol=17))  # type: ignore[arg-type]
    assert port.protocol == "UNKNOWN(17)"
    service = ExposedService.from_proto(pb.ExposedService(name="web", type=23))  # type: ignore[arg-type]
    assert service.type == "UNKNOWN(23)"


class _Scripted(pb_grpc.ExposureServiceServicer):
    """Answers every CreateServices with the indexes and outcomes it was given."""

    def __init__(self, answers: Sequence[tuple[int, int]]) -> None:
        self.answers = answers

    async def CreateServices(  # noqa: N802 - the RPC's name
        self, request: pb.CreateServicesRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[pb.CreateServicesResponse]:
        for index, outcome in self.answers:
            yield pb.CreateServicesResponse(index=index, outcome=outcome, rule="80")  # type: ignore[arg-type]


async def _cli_against(answers: Sequence[tuple[int, int]], *rules: str) -> tuple[int, str, str]:
    server = grpc.aio.server()
    # Only CreateServices is called; the other RPCs stay the base class's UNIMPLEMENTED.
    scripted = _Scripted(answers)  # type: ignore[abstract]
    pb_grpc.add_ExposureServiceServicer_to_server(scripted, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        process = await asyncio.create_subprocess_exec(
            K8SAILOR, "expose", "web", *rules, "--server", f"127.0.0.1:{port}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await process.communicate()
    finally:
        await server.stop(None)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


CREATED = pb.OUTCOME_CREATED


@pytest.mark.parametrize(
    ("answers", "reported"),
    [
        ([(0, CREATED)], "reported 1 of 2 rules in 1 results"),
        ([(0, CREATED), (0, CREATED)], "reported 1 of 2 rules in 2 results"),
        (
            [(0, CREATED), (1, CREATED), (1, CREATED)],
            "reported 2 of 2 rules in 3 results",
        ),
        ([(0, CREATED), (7, CREATED)], "reported 1 of 2 rules in 2 results"),
    ],
)
async def test_the_cli_exits_1_unless_every_rule_got_exactly_one_result(
    answers: list[tuple[int, int]], reported: str
) -> None:
    code, _, err = await _cli_against(answers, "80", "81")
    assert code == 1
    assert f"k8sailor: the server {reported}" in err


async def test_the_cli_exits_0_for_one_good_result_per_rule() -> None:
    code, out, err = await _cli_against([(1, CREATED), (0, pb.OUTCOME_UNCHANGED)], "80", "81")
    assert code == 0, err
    assert len(out.splitlines()) == 3


async def test_the_cli_shows_an_unknown_outcome_and_exits_1() -> None:
    code, out, _ = await _cli_against([(0, 42)], "80")
    assert code == 1
    assert "UNKNOWN(42)" in out
