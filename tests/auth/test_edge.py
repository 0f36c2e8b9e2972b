"""The edge (server.api.edge) through real servers: a call is authenticated before its request is
decoded, and its size and number of rules are checked before a single rule is read; nothing
of a credential is ever echoed."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from kubernetes_asyncio import client
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import server.api.convert
import server.api.reading
from k8sailor.v1 import exposure_pb2 as pb
from server.api.wire import ENVELOPE_BYTES
from server.app import ServerConfig, serving
from tests.auth.conftest import Pki, Serve, Teams, mtls, tls
from tests.servers import never_sending

SERVICE = "/k8sailor.v1.ExposureService"
REQUESTS: dict[str, Any] = {
    "CreateServices": pb.CreateServicesRequest,
    "ApplyServices": pb.ApplyServicesRequest,
    "DeleteServices": pb.DeleteServicesRequest,
    "ListServices": pb.ListServicesRequest,
}


class Reads:
    """Every request the server decodes and every rule it converts, counted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.decoded: list[str] = []
        self.rules = 0
        for name, message in REQUESTS.items():
            monkeypatch.setattr(message, "FromString", self._decoding(name, message.FromString))
        for module in (server.api.convert,):
            monkeypatch.setattr(module, "rule_from_proto", self._converting(module.rule_from_proto))

    def _decoding(self, name: str, decode: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
        def counting(data: bytes) -> Any:
            self.decoded.append(name)
            return decode(data)

        return staticmethod(counting)

    def _converting(self, convert: Callable[..., Any]) -> Callable[..., Any]:
        def counting(*args: Any) -> Any:
            self.rules += 1
            return convert(*args)

        return counting


def empty_rules(count: int, namespace: str = "default") -> bytes:
    """A CreateServicesRequest (or ApplyServicesRequest: same field numbers) of `count` empty
    rules, two bytes each, encoded by hand as an attacker would."""
    head = pb.CreateServicesRequest(namespace=namespace, deployment="web").SerializeToString()
    return head + b"\x1a\x00" * count


async def call(
    target: str,
    method: str,
    request: bytes,
    credentials: grpc.ChannelCredentials | None,
    metadata: tuple[tuple[str, str], ...] = (),
) -> tuple[grpc.StatusCode, str]:
    """One RPC with an already encoded request; the status and message it ended with."""
    channel = (
        grpc.aio.secure_channel(target, credentials)
        if credentials is not None
        else grpc.aio.insecure_channel(target)
    )
    async with channel:
        path = f"{SERVICE}/{method}"
        try:
            if method == "ListServices":
                await channel.unary_unary(path, None, None)(request, metadata=metadata, timeout=60)
            else:
                async for _ in channel.unary_stream(path, None, None)(
                    request, metadata=metadata, timeout=60
                ):
                    pass
        except grpc.aio.AioRpcError as error:
            return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def _requests(namespace: str) -> dict[str, bytes]:
    """Per RPC, a request of far more rules (or names) than it may hold, each as short as
    can be, in fewer bytes than the most a request may have."""
    names = pb.DeleteServicesRequest(namespace=namespace, deployment="web").SerializeToString()
    listing = pb.ListServicesRequest(namespace=namespace, deployment="web").SerializeToString()
    return {
        "CreateServices": empty_rules(100_000, namespace),
        "ApplyServices": empty_rules(100_000, namespace),
        "DeleteServices": names + b"\x1a\x01a" * 10_000,
        "ListServices": listing,
    }


async def test_an_unauthenticated_call_is_refused_before_its_request_is_decoded(
    serve: Serve, pki: Pki, teams: Teams, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = Reads(monkeypatch)
    anonymous = grpc.ssl_channel_credentials(root_certificates=pki.ca.pem)

    async with serve(tls(pki)) as target:
        refusals = {
            method: await call(target, method, request, anonymous)
            for method, request in _requests(teams.a).items()
        }

    assert {code for code, _ in refusals.values()} == {grpc.StatusCode.UNAUTHENTICATED}
    assert all(
        message.startswith("this server needs to know who is calling")
        for _, message in refusals.values()
    ), refusals
    assert reads.decoded == []
    assert reads.rules == 0


async def test_an_authenticated_oversized_request_is_refused_before_its_rules_are_read(
    serve: Serve, pki: Pki, teams: Teams, monkeypatch: pytest.MonkeyPatch
) -> None:
    # erin may do nothing at all: the limits are checked before authorization is asked.
    erin = pki.ca.issue(common_name="erin")
    reads = Reads(monkeypatch)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.pem,
        private_key=erin.private_key,
        certificate_chain=erin.certificate,
    )
    huge_name = pb.ListServicesRequest(namespace="n" * (ENVELOPE_BYTES + 1), deployment="web")

    async with serve(mtls(pki)) as target:
        refusals = {
            method: await call(target, method, request, credentials)
            for method, request in _requests(teams.a).items()
            if method != "ListServices"
        }
        refusals["257 rules"] = await call(
            target, "CreateServices", empty_rules(257, teams.a), credentials
        )
        refusals["257 names"] = await call(
            target,
            "DeleteServices",
            pb.DeleteServicesRequest(
                namespace=teams.a, deployment="web", names=[f"s{i}" for i in range(257)]
            ).SerializeToString(),
            credentials,
        )
        refusals["ListServices"] = await call(
            target, "ListServices", huge_name.SerializeToString(), credentials
        )

    many = (
        "the request has more than 320 fields: this server accepts at most 256 {} in one "
        "request (--max-rules); split them over several requests"
    )
    assert refusals == {
        "CreateServices": (grpc.StatusCode.INVALID_ARGUMENT, many.format("rules")),
        "ApplyServices": (grpc.StatusCode.INVALID_ARGUMENT, many.format("rules")),
        "DeleteServices": (grpc.StatusCode.INVALID_ARGUMENT, many.format("names")),
        "257 rules": (
            grpc.StatusCode.INVALID_ARGUMENT,
            "257 rules is more than this server accepts in one request (256); split them over "
            "several requests",
        ),
        "257 names": (
            grpc.StatusCode.INVALID_ARGUMENT,
            "257 names is more than this server accepts in one request (256); split them over "
            "several requests",
        ),
        "ListServices": (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"the request is {huge_name.ByteSize()} bytes; this server takes at most "
            f"{ENVELOPE_BYTES} in one ListServices request",
        ),
    }
    assert reads.decoded == []
    assert reads.rules == 0


async def test_without_authorization_the_limits_still_come_before_decoding(
    api_client: client.ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = Reads(monkeypatch)
    config = ServerConfig(listen="127.0.0.1:0", max_rules=10)

    async with serving(api_client, config, grace=0.5) as running:
        code, message = await call(
            f"127.0.0.1:{running.port}", "CreateServices", empty_rules(11), None
        )

    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith("11 rules is more than this server accepts in one request (10)")
    assert reads.decoded == []
    assert reads.rules == 0


def nested_rules(*rules: bytes, namespace: str = "default") -> bytes:
    """A CreateServicesRequest (or ApplyServicesRequest) of the given encoded Rules."""
    head = pb.CreateServicesRequest(namespace=namespace, deployment="web").SerializeToString()
    return head + b"".join(_delimited(3, rule) for rule in rules)


def _delimited(number: int, content: bytes) -> bytes:
    return _key(number) + _size(len(content)) + content


def _key(number: int) -> bytes:
    return _size((number << 3) | 2)


def _size(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def empty_ports(count: int) -> bytes:
    """A Rule's spec field of `count` empty ports: two bytes each on the wire, a whole
    ServicePort each once decoded."""
    return _delimited(2, b"\x1a\x00" * count)


@pytest.mark.parametrize("method", ["CreateServices", "ApplyServices"])
async def test_the_ports_nested_in_a_rule_are_bounded_before_decoding(
    api_client: client.ApiClient, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    reads = Reads(monkeypatch)
    valid = pb.Rule(raw="80").SerializeToString()
    requests = {
        # 16 KiB of empty ports: within the rule's size, 8,000 ports once decoded.
        "ports": nested_rules(valid, empty_ports(8_000)),
        # The singular spec field, repeated: protobuf merges the copies' ports into one spec.
        "copies": nested_rules(valid, valid, empty_ports(300) + empty_ports(213)),
        "long": nested_rules(pb.Rule(raw="8" * 40_000).SerializeToString()),
        "fields": nested_rules(b"\x12\x00" * 1_000),
    }

    async with serving(api_client, ServerConfig(listen="127.0.0.1:0"), grace=0.5) as running:
        refusals = {
            what: await call(f"127.0.0.1:{running.port}", method, request, None)
            for what, request in requests.items()
        }
        accepted = await call(
            f"127.0.0.1:{running.port}",
            method,
            nested_rules(empty_ports(200) + empty_ports(56)),
            None,
        )

    assert refusals == {
        "ports": (
            grpc.StatusCode.INVALID_ARGUMENT,
            "rule 1 has at least 575 ports; a rule may have at most 256 ports, and this server "
            "reads none with over 512: split it into several rules",
        ),
        "copies": (
            grpc.StatusCode.INVALID_ARGUMENT,
            "rule 2 has 513 ports; a rule may have at most 256 ports, and this server reads none "
            "with over 512: split it into several rules",
        ),
        "long": (
            grpc.StatusCode.INVALID_ARGUMENT,
            "rule 0 is 40004 bytes encoded; a rule may be at most 16384 characters, and this "
            "server reads none over 32784 bytes: split it into several rules",
        ),
        "fields": (
            grpc.StatusCode.INVALID_ARGUMENT,
            "rule 0 has more than 576 fields: a rule may have at most 256 ports and few other "
            "fields",
        ),
    }
    assert reads.decoded == [method]  # the one of 256 ports only
    assert reads.rules <= 1
    assert not accepted[1].startswith("rule 0 ")  # the edge let it through


async def test_a_credential_without_a_scheme_is_echoed_nowhere(
    api_client: client.ApiClient,
    pki: Pki,
    teams: Teams,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # No scheme: the credential itself, which nothing may echo (the old message quoted its
    # first 20 characters).
    secret = "zQ9xW7vV3kP1jM5rR8tT2yY4"
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    caplog.set_level(logging.DEBUG)
    config = ServerConfig(listen="127.0.0.1:0", auth=tls(pki))
    request = pb.CreateServicesRequest(
        namespace=teams.a, deployment="web", rules=[pb.Rule(raw="80:8080")]
    ).SerializeToString()

    async with serving(api_client, config, grace=0.5, tracer_provider=provider) as running:
        code, message = await call(
            f"127.0.0.1:{running.port}",
            "CreateServices",
            request,
            grpc.ssl_channel_credentials(root_certificates=pki.ca.pem),
            metadata=(("authorization", secret),),
        )

    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert message.startswith("authorization metadata must be 'Bearer <token>'")
    requests = [r for r in caplog.records if r.name == "k8sailor.requests"]
    assert requests, "the call was logged"
    spans = exporter.get_finished_spans()
    assert spans, "the call was traced"
    # Not the credential, nor any 5 characters of it in a row.
    pieces = {secret[i : i + 5] for i in range(len(secret) - 4)}
    seen = [message, *(r.getMessage() for r in caplog.records)]
    for span in spans:
        seen.append(span.status.description or "")
        seen.extend(str(value) for value in (span.attributes or {}).values())
        for event in span.events:
            seen.extend(str(value) for value in (event.attributes or {}).values())
    leaks = [(piece, text) for text in seen for piece in pieces if piece in text]
    assert leaks == []


async def list_services_by_reflection(
    target: str, credentials: grpc.ChannelCredentials | None
) -> tuple[grpc.StatusCode, list[str]]:
    channel = (
        grpc.aio.secure_channel(target, credentials)
        if credentials is not None
        else grpc.aio.insecure_channel(target)
    )
    async with channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        try:
            async for answer in stub.ServerReflectionInfo(iter([request]), timeout=30):
                return grpc.StatusCode.OK, [s.name for s in answer.list_services_response.service]
        except grpc.aio.AioRpcError as error:
            return error.code(), []
    return grpc.StatusCode.OK, []


async def test_reflection_is_for_callers_who_authenticate_when_authorization_is_on(
    serve: Serve, pki: Pki, api_client: client.ApiClient
) -> None:
    erin = pki.ca.issue(common_name="erin")
    certificate = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.pem,
        private_key=erin.private_key,
        certificate_chain=erin.certificate,
    )
    async with serve(tls(pki)) as target:
        anonymous = await list_services_by_reflection(
            target, grpc.ssl_channel_credentials(root_certificates=pki.ca.pem)
        )
    async with serve(mtls(pki)) as target:
        authenticated = await list_services_by_reflection(target, certificate)
    async with serving(api_client, ServerConfig(listen="127.0.0.1:0"), grace=0.5) as running:
        unauthorized_server = await list_services_by_reflection(f"127.0.0.1:{running.port}", None)

    assert anonymous == (grpc.StatusCode.UNAUTHENTICATED, [])
    assert authenticated[0] is grpc.StatusCode.OK
    assert "k8sailor.v1.ExposureService" in authenticated[1]
    assert unauthorized_server == authenticated


async def never_sent(
    target: str, method: str, credentials: grpc.ChannelCredentials | None
) -> tuple[grpc.StatusCode, str]:
    """A call whose request message never comes (the client holds its stream open)."""
    channel = (
        grpc.aio.secure_channel(target, credentials)
        if credentials is not None
        else grpc.aio.insecure_channel(target)
    )
    async with channel:
        return await never_sending(channel, method)


async def test_an_unauthenticated_call_is_refused_before_its_request_is_read(
    serve: Serve, pki: Pki
) -> None:
    async with serve(tls(pki)) as target:
        code, message = await never_sent(
            target,
            f"{SERVICE}/CreateServices",
            grpc.ssl_channel_credentials(root_certificates=pki.ca.pem),
        )

    # Not DEADLINE_EXCEEDED: the server did not wait for the request to know.
    assert code is grpc.StatusCode.UNAUTHENTICATED, message


@pytest.mark.parametrize(
    ("method", "seconds"),
    # A health check, which needs no identity, gets its own short time (1 s, not shortened).
    [(f"{SERVICE}/CreateServices", "0.5"), ("/grpc.health.v1.Health/Check", "1")],
)
async def test_a_request_that_does_not_arrive_in_time_is_refused(
    api_client: client.ApiClient, monkeypatch: pytest.MonkeyPatch, method: str, seconds: str
) -> None:
    monkeypatch.setattr(server.api.reading, "RECEIVE_SECONDS", 0.5)
    async with serving(api_client, ServerConfig(listen="127.0.0.1:0"), grace=0.5) as running:
        refused = await never_sent(f"127.0.0.1:{running.port}", method, None)

    assert refused == (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        f"the request message did not arrive within {seconds} s",
    )
