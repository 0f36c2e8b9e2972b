"""The pure parts of server.observability: which OTEL_* settings switch tracing on, the JSON log
line's shape, and the bounds on metric label values."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import REGISTRY

from server.domain.outcomes import Outcome, RuleResult
from server.observability.endpoint import split_address
from server.observability.logs import Fields, JsonFormatter, configure, default_format
from server.observability.metrics import KubeCallMetrics, rule_labels
from server.observability.tracing import TracingConfigError, provider_from_env
from server.rules import ServiceType


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_SERVICE_NAME": "k8sailor"},  # naming the service does not ask for traces
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"},
        {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"},
    ],
)
def test_tracing_is_off_unless_the_environment_asks(environ: dict[str, str]) -> None:
    assert provider_from_env(environ) is None


@pytest.mark.parametrize(
    "environ",
    [
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"},
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"},
        {"OTEL_TRACES_EXPORTER": "console"},
        {"OTEL_TRACES_EXPORTER": "otlp,console", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
    ],
)
def test_an_endpoint_or_an_exporter_switches_tracing_on(environ: dict[str, str]) -> None:
    provider = provider_from_env(environ)
    assert isinstance(provider, TracerProvider)
    provider.shutdown()


def test_the_service_is_named_k8sailor_unless_the_environment_names_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    provider = provider_from_env({"OTEL_TRACES_EXPORTER": "console"})
    assert provider is not None
    assert provider.resource.attributes["service.name"] == "k8sailor"
    provider.shutdown()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "exposer-eu1")
    provider = provider_from_env({"OTEL_TRACES_EXPORTER": "console"})
    assert provider is not None
    assert provider.resource.attributes["service.name"] == "exposer-eu1"
    provider.shutdown()


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER: jaeger is not one of"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            "OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf' is not supported",
        ),
    ],
)
def test_settings_k8sailor_cannot_honour_are_refused_by_name(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(TracingConfigError, match=message):
        provider_from_env(environ)


def _record(msg: object, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("k8sailor.test", level, __file__, 1, msg, None, None)


def test_a_json_line_has_time_level_logger_and_message() -> None:
    line = json.loads(JsonFormatter().format(_record("serving on %s")))
    assert line.keys() == {"time", "level", "logger", "message"}
    assert line["level"] == "INFO"
    assert line["logger"] == "k8sailor.test"
    assert line["message"] == "serving on %s"
    assert line["time"].endswith("Z")
    assert "T" in line["time"]


def test_a_structured_line_keeps_its_own_fields_at_the_top_level() -> None:
    fields = Fields({"event": "CreateServices", "message": "", "outcomes": {"CREATED": 2}})
    line = json.loads(JsonFormatter().format(_record(fields)))
    assert line["event"] == "CreateServices"
    assert line["message"] == ""  # the request's own status message, not the log message
    assert line["outcomes"] == {"CREATED": 2}
    # The text format shows the same fields as compact JSON, as the request line always was.
    assert json.loads(str(fields)) == dict(fields)


def test_an_error_line_carries_its_traceback_inside_the_json() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord(
            "k8sailor", logging.ERROR, __file__, 1, "failed", None, sys.exc_info()
        )
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "failed"
    assert "RuntimeError: boom" in line["error"]


def test_configure_sends_every_logger_through_one_json_handler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", root.handlers[:])
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    level = root.level
    try:
        configure("json", logging.INFO, stream)
        logging.getLogger("grpc._cython").warning("a library's warning")
        logging.getLogger("k8sailor.server").debug("not at INFO")
    finally:
        root.setLevel(level)
        logging.captureWarnings(False)
    [line] = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert line["logger"] == "grpc._cython"
    assert line["level"] == "WARNING"


def test_json_is_the_default_outside_a_terminal() -> None:
    assert default_format(io.StringIO()) == "json"


def test_rule_label_values_are_bounded() -> None:
    known = RuleResult(0, "80", Outcome.FAILED, reason="TooManyRequests", service_type=None)
    odd = RuleResult(1, "80", Outcome.FAILED, reason="Reason-from-a-proxy-1234")
    created = RuleResult(2, "80", Outcome.CREATED, service_type=ServiceType.NODE_PORT)
    assert rule_labels(known) == ("Unknown", "FAILED", "TooManyRequests", "CreateServices")
    assert rule_labels(odd) == ("Unknown", "FAILED", "Other", "CreateServices")
    assert rule_labels(created, "ApplyServices") == ("NodePort", "CREATED", "", "ApplyServices")
    assert rule_labels(created, "SomethingNew") == ("NodePort", "CREATED", "", "Other")


def test_retry_reasons_are_bounded() -> None:
    def count(reason: str) -> float:
        labels = {"reason": reason}
        return REGISTRY.get_sample_value("k8sailor_kube_retries_total", labels) or 0.0

    before = {reason: count(reason) for reason in ("TooManyRequests", "503", "Other")}
    observer = KubeCallMetrics()
    observer.call_retried("create", "services", "TooManyRequests")
    observer.call_retried("create", "services", "503")
    observer.call_retried("create", "services", "a reason a proxy made up")
    assert {reason: count(reason) - before[reason] for reason in before} == {
        "TooManyRequests": 1,
        "503": 1,
        "Other": 1,
    }


@pytest.mark.parametrize(
    ("address", "parsed"),
    [("0.0.0.0:9090", ("0.0.0.0", 9090)), ("[::]:0", ("::", 0)), ("localhost:9", ("localhost", 9))],
)
def test_metrics_addresses(address: str, parsed: tuple[str, int]) -> None:
    assert split_address(address) == parsed


@pytest.mark.parametrize("address", ["9090", ":9090", "host:99999", "host:http"])
def test_bad_metrics_addresses_say_what_is_expected(address: str) -> None:
    with pytest.raises(ValueError, match="is not HOST:PORT"):
        split_address(address)
