"""`make fuzz`: a coverage-guided run (atheris, libFuzzer) over what a request's rules go
through before any API call: protobuf Rule -> domain -> parse or check -> Service manifest.

Not part of `make test`; the suite's own fuzzer is tests/e2e/test_fuzz.py (hypothesis, through
the real server). Here the input is raw bytes, read either as rule text or as an encoded
`k8sailor.v1.Rule` message (so structured specs get every value protobuf can carry), and a
crash is anything but a RuleError, or a broken promise:

- a valid rule's canonical text parses back to the same rule;
- every Service built is named, selects the Deployment and has at most MAX_PORTS ports;
- what an error quotes back is bounded (it travels in a result message).

Run: .venv/bin/python -m tests.fuzz.fuzz_rules [libFuzzer flags, e.g. -max_total_time=120]
"""

from __future__ import annotations

import sys

import atheris
from google.protobuf.message import DecodeError

from k8sailor.v1 import exposure_pb2 as pb

# Coverage is what guides the search: count it in our code only (server.api.exposure imports
# grpc, OpenTelemetry and the Kubernetes client, which would only slow every run down).
with atheris.instrument_imports(include=["server"]):
    from server.api.convert import rule_from_proto
    from server.manifests import ContainerPort, Deployment, build_service
    from server.rules import MAX_PORTS, MAX_RULE_LENGTH, Protocol, RuleError, check_rule, parse_rule

DEPLOYMENT = Deployment(
    "web",
    "default",
    "6a3f0d52-1c5e-4bd0-9d0a-6f1f2b7c9e11",
    {"app": "web"},
    (ContainerPort("http", 8080, Protocol.TCP), ContainerPort("dns", 53, Protocol.UDP)),
)
# An error quotes its rule (text up to MAX_RULE_LENGTH, or an excerpt) and one sentence.
MAX_ERROR = MAX_RULE_LENGTH + 2_000


def one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    as_proto = provider.ConsumeBool()
    if as_proto:
        try:
            message = pb.Rule.FromString(provider.ConsumeBytes(len(data)))
        except DecodeError:
            return
        rule = rule_from_proto(0, message)
    else:
        rule = provider.ConsumeUnicodeNoSurrogates(len(data))
    try:
        if isinstance(rule, RuleError):
            raise rule
        checked = parse_rule(rule, 0) if isinstance(rule, str) else check_rule(rule, 0)
        canonical = checked.canonical()
        if parse_rule(canonical, 0) != checked:
            raise AssertionError(f"canonical text {canonical!r} reads back differently")
        manifest = build_service(checked, DEPLOYMENT, 0)
    except RuleError as error:
        if len(error.text) > MAX_ERROR or len(str(error)) > MAX_ERROR:
            raise AssertionError(f"an error {len(str(error))} characters long") from error
        return
    if not manifest["metadata"]["name"] or manifest["spec"].get("selector", {}) not in (
        {},
        {"app": "web"},
    ):
        raise AssertionError(f"unexpected manifest {manifest}")
    if len(manifest["spec"].get("ports", ())) > MAX_PORTS:
        raise AssertionError("more ports than MAX_PORTS")


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
