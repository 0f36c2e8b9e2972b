"""Arbitrary requests through the real servicer: exactly one result per rule, or a request-level
status that is the caller's fault, never INTERNAL, never a traceback in the server's log.

Rules are arbitrary text (rule-like or not, huge or not) and structured specs with extreme
values: enum numbers the proto does not define, int32 limits, empty and overlong strings. Every
request is a dry run against the real API server, so what passes our checks is judged by it.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from k8sailor.v1 import exposure_pb2 as pb
from k8sailor.v1 import exposure_pb2_grpc as pb_grpc

INT32 = st.one_of(
    st.sampled_from([0, 1, -1, 80, 65535, 65536, 30000, 32767, 2**31 - 1, -(2**31)]),
    st.integers(-(2**31), 2**31 - 1),
)
ENUM = st.one_of(st.integers(0, 6), st.sampled_from([-1, 99, 2**31 - 1, -(2**31)]))
RULE_CHARS = "0123456789:/,()=#!^@ -.abcdefghtcpudpsz\t"
TEXT = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=RULE_CHARS, max_size=60),
    st.builds(
        lambda s, n: s * n,
        st.text(alphabet=RULE_CHARS, min_size=1, max_size=8),
        st.integers(1, 3000),
    ),
    st.sampled_from(["80", "#80:80", "!31234:80:8088", "@db.example.com", "web=80:http", "53/udp"]),
)  # fmt: skip
NAME = st.one_of(st.just(""), st.text(max_size=20), st.text(alphabet="abc-9", max_size=70))


@st.composite
def ports(draw: st.DrawFn) -> pb.ServicePort:
    port = pb.ServicePort(
        name=draw(NAME),
        port=draw(INT32),
        node_port=draw(INT32),
        protocol=draw(ENUM),  # type: ignore[arg-type]
        app_protocol=draw(st.one_of(st.just(""), st.text(max_size=40))),
    )
    target = draw(st.sampled_from(["number", "name", "unset"]))
    if target == "number":
        port.target_port_number = draw(INT32)
    elif target == "name":
        port.target_port_name = draw(NAME)
    return port


@st.composite
def rules(draw: st.DrawFn) -> pb.Rule:
    kind = draw(st.sampled_from(["raw", "spec", "empty"]))
    if kind == "raw":
        return pb.Rule(raw=draw(TEXT))
    if kind == "empty":
        return pb.Rule()
    many = draw(st.sampled_from([0, 1, 2, 3, 300]))
    spec = pb.ServiceSpec(
        type=draw(ENUM),  # type: ignore[arg-type]
        name=draw(NAME),
        external_name=draw(st.one_of(st.just(""), TEXT)),
        ports=[draw(ports()) for _ in range(min(many, 3))],
    )
    if many == 300:
        spec.ports.extend(pb.ServicePort(port=1000 + i) for i in range(300))
    return pb.Rule(spec=spec)


# The request-level statuses that say the caller sent something wrong (no such Deployment, a
# bad namespace name, too many rules): anything else, INTERNAL above all, is a bug of ours.
CALLERS_FAULT = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    request_rules=st.lists(rules(), min_size=0, max_size=8),
    odd_names=st.booleans(),
    namespace_text=NAME,
    deployment_text=st.one_of(NAME, st.just("web")),
)
async def test_any_request_gets_one_result_per_rule_and_never_internal(
    target: str,
    namespace: str,
    deployment: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    request_rules: list[pb.Rule],
    odd_names: bool,
    namespace_text: str,
    deployment_text: str,
) -> None:
    request = pb.CreateServicesRequest(
        namespace=namespace_text if odd_names else namespace,
        deployment=deployment_text if odd_names else "web",
        rules=request_rules,
        dry_run=True,
    )
    caplog.clear()
    indexes: list[int] = []
    status, details = grpc.StatusCode.OK, ""
    with caplog.at_level(logging.WARNING):
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.ExposureServiceStub(channel)
            try:
                async for result in stub.CreateServices(request, timeout=60):
                    indexes.append(result.index)
                    assert result.outcome != pb.OUTCOME_UNSPECIFIED
                    if result.outcome == pb.OUTCOME_FAILED:
                        assert result.reason != "InternalError", result.error
            except grpc.aio.AioRpcError as error:
                status, details = error.code(), error.details() or ""
    if status is grpc.StatusCode.OK:
        assert sorted(indexes) == list(range(len(request_rules)))
    else:
        assert status in CALLERS_FAULT, (status, details)
        assert indexes == []
    bugs = [r for r in caplog.records if r.exc_info is not None or r.levelno >= logging.ERROR]
    assert bugs == [], [r.getMessage() for r in bugs]
