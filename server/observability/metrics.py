"""Every Prometheus metric k8sailor exports, and the Kube call observer that counts with them.

The metrics live in prometheus_client's default registry, beside the process and Python
metrics it collects by itself. They are module-level objects so that any module can count
with them by importing them: authentication imports its own from here (AUTHENTICATIONS,
AUTHORIZATIONS) rather than defining metrics of its own, so the names and labels stay in one
place and the README can list them all. The Deployment cache's are in cache_metrics (imported
below, so they are registered whenever these are), counted by the observer server.app gives
the cache: server.kube imports nothing of observability. The HTTP server that serves them on
/metrics is server.observability.endpoint.

Every label value is bounded: Service types, outcomes, verbs, resources, codes and reasons
come from short fixed lists, and anything else is counted as "Other". Namespaces, Deployment
names and callers never become labels: each new value would be a new time series for ever.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final, Protocol

import prometheus_client
from prometheus_client import Counter, Gauge, Histogram

from server.observability import cache_metrics  # noqa: F401  (registered with the rest)

if TYPE_CHECKING:
    from server.rules import ServiceType

log = logging.getLogger("k8sailor.metrics")

# go-grpc-prometheus exports no *_created series, and every counter would otherwise get one
# per label set: half the series, no information a dashboard uses.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

# Prometheus' (and so go-grpc-prometheus') default buckets, so stock dashboards' quantiles
# mean the same here.
_GO_DEFAULT_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# client-go's rest_client_request_duration_seconds buckets: API calls take milliseconds when
# all is well and up to a minute when the API server is struggling.
_KUBE_BUCKETS: Final = (0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)

OTHER: Final = "Other"

# --- gRPC server: go-grpc-prometheus' names and labels ---------------------------------------

_GRPC_LABELS: Final = ("grpc_type", "grpc_service", "grpc_method")

GRPC_STARTED: Final = Counter(
    "grpc_server_started_total",
    "Total number of RPCs started on the server.",
    _GRPC_LABELS,
)
GRPC_HANDLED: Final = Counter(
    "grpc_server_handled_total",
    "Total number of RPCs completed on the server, regardless of success or failure.",
    (*_GRPC_LABELS, "grpc_code"),
)
GRPC_MSG_RECEIVED: Final = Counter(
    "grpc_server_msg_received_total",
    "Total number of RPC stream messages received on the server.",
    _GRPC_LABELS,
)
GRPC_MSG_SENT: Final = Counter(
    "grpc_server_msg_sent_total",
    "Total number of gRPC stream messages sent by the server.",
    _GRPC_LABELS,
)
GRPC_HANDLING_SECONDS: Final = Histogram(
    "grpc_server_handling_seconds",
    "Histogram of response latency (seconds) of gRPC that had been application-level "
    "handled by the server.",
    _GRPC_LABELS,
    buckets=_GO_DEFAULT_BUCKETS,
)

# --- rules ------------------------------------------------------------------------------------

RULES: Final = Counter(
    "k8sailor_rules_total",
    "Rules handled, by Service type, outcome, reason (empty for CREATED, UNCHANGED, UPDATED "
    "and DELETED) and the RPC that handled them (CreateServices, ApplyServices, "
    "DeleteServices; one Service named for deletion counts as a rule).",
    ("type", "outcome", "reason", "grpc_method"),
)

# The API server's metav1.StatusReason values, and k8sailor's own reasons. The API server's
# answer is network input: any other reason is counted as Other.
KUBE_REASONS: Final = frozenset(
    {
        "",
        # k8sailor's
        "RuleInvalid",
        "DeadlineExceeded",
        "InternalError",
        "Unreachable",
        # metav1.StatusReason
        "Unauthorized",
        "Forbidden",
        "NotFound",
        "AlreadyExists",
        "Conflict",
        "Gone",
        "Invalid",
        "ServerTimeout",
        "StoreReadError",
        "Timeout",
        "TooManyRequests",
        "BadRequest",
        "MethodNotAllowed",
        "NotAcceptable",
        "RequestEntityTooLarge",
        "UnsupportedMediaType",
        "ServiceUnavailable",
        "Expired",
    }
)
# ... and those only the lifecycle RPCs give (server.domain.lifecycle).
RULE_REASONS: Final = KUBE_REASONS | {"NotOwned", "FieldManagerConflict", "FieldImmutable"}
UNKNOWN_TYPE: Final = "Unknown"  # a rule refused before its type was known
# The RPCs whose results are counted: a fixed list, like every other label's values.
RULE_METHODS: Final = frozenset({"CreateServices", "ApplyServices", "DeleteServices"})


class _Named(Protocol):
    @property
    def value(self) -> str: ...


class CountedResult(Protocol):
    """What count_rules reads of one result: its Service type, its outcome's name and its
    reason. Declared here, structurally, because observability does not import the domain;
    the domain's results (server.domain.outcomes.RuleOutcome: a rule's, or a Service's in the
    lifecycle RPCs) fit it."""

    @property
    def service_type(self) -> ServiceType | None: ...
    @property
    def outcome(self) -> _Named: ...
    @property
    def reason(self) -> str: ...


def rule_labels(result: CountedResult, method: str = "CreateServices") -> tuple[str, str, str, str]:
    """The (type, outcome, reason, grpc_method) labels one rule result is counted under."""
    type_ = result.service_type.value if result.service_type is not None else UNKNOWN_TYPE
    reason = result.reason if result.reason in RULE_REASONS else OTHER
    return type_, result.outcome.value, reason, method if method in RULE_METHODS else OTHER


class RuleCounter(Protocol):
    """What counts a request's rule results: count_rules, when metrics are on."""

    def __call__(
        self, results: Iterable[CountedResult], method: str = "CreateServices"
    ) -> None: ...


def count_rules(results: Iterable[CountedResult], method: str = "CreateServices") -> None:
    """Count a request's rule results (the servicers call this once per request)."""
    for result in results:
        RULES.labels(*rule_labels(result, method)).inc()


# --- the API server, as k8sailor sees it --------------------------------------------------------

KUBE_REQUESTS: Final = Counter(
    "k8sailor_kube_requests_total",
    "API server requests (one per attempt), by verb, resource and HTTP status code "
    '("error" or "timeout" when no answer came).',
    ("verb", "resource", "code"),
)
KUBE_REQUEST_SECONDS: Final = Histogram(
    "k8sailor_kube_request_duration_seconds",
    "How long API server requests took, from sending to the whole answer.",
    ("verb", "resource"),
    buckets=_KUBE_BUCKETS,
)
KUBE_IN_FLIGHT: Final = Gauge(
    "k8sailor_kube_in_flight",
    "API server requests sent and not yet answered.",
)
KUBE_CONCURRENCY_LIMIT: Final = Gauge(
    "k8sailor_kube_concurrency_limit",
    "API server requests k8sailor lets be in flight at once now: --max-concurrency, or fewer "
    "while the adaptive limit sees calls queueing inside the API server.",
)
KUBE_RETRIES: Final = Counter(
    "k8sailor_kube_retries_total",
    "API server requests sent again, by why (the status that asked for it, or the failure).",
    ("reason",),
)

_VERBS: Final = frozenset({"get", "list", "watch", "create", "update", "patch", "delete"})
_RESOURCES: Final = frozenset(
    {
        "deployments",
        "services",
        "namespaces",
        "tokenreviews",
        "subjectaccessreviews",
        "selfsubjectaccessreviews",
    }
)
_CODE: Final = re.compile(r"[1-5][0-9][0-9]|error|timeout")
_MAX_CACHED: Final = 1024


def _bounded(value: str, known: frozenset[str]) -> str:
    return value if value in known else OTHER


class KubeCallMetrics:
    """server.kube's CallObserver, in Prometheus terms: one started/finished per attempt."""

    def __init__(self) -> None:
        # Label children keyed by the values Kube passes, bounded before use.
        self._calls: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}

    def call_started(self, verb: str, resource: str) -> None:
        KUBE_IN_FLIGHT.inc()

    def call_finished(self, verb: str, resource: str, code: str, seconds: float) -> None:
        KUBE_IN_FLIGHT.dec()
        key = (verb, resource, code)
        children = self._calls.get(key)
        if children is None:
            verb, resource = _bounded(verb, _VERBS), _bounded(resource, _RESOURCES)
            code = code if _CODE.fullmatch(code) else OTHER
            children = (
                KUBE_REQUESTS.labels(verb, resource, code),
                KUBE_REQUEST_SECONDS.labels(verb, resource),
            )
            if len(self._calls) < _MAX_CACHED:  # codes come from the network
                self._calls[key] = children
        requests, durations = children
        requests.inc()
        durations.observe(seconds)

    def call_retried(self, verb: str, resource: str, reason: str) -> None:
        # The Status reason the API server gave, or its HTTP status when it gave none.
        known = reason in KUBE_REASONS or _CODE.fullmatch(reason)
        KUBE_RETRIES.labels(reason if known else OTHER).inc()


# --- for authentication to count with ------------------------------------------------------------

AUTHENTICATIONS: Final = Counter(
    "k8sailor_authentications_total",
    "Calls authenticated, by how the caller proved who it is (server.auth.identity.Method; "
    '"none" when it did not) and result ("ok", "denied", or "error" when a TokenReview '
    "could not be made).",
    ("method", "result"),
)
AUTHORIZATIONS: Final = Counter(
    "k8sailor_authorizations_total",
    'Requests authorized, by result: "allowed" (every type asked for), "partly_denied" (some '
    'rules DENIED), "denied" (PERMISSION_DENIED), "error" (the API server could not be asked).',
    ("result",),
)
