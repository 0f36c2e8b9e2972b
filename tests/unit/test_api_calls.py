"""server.api.calls.run and server.api.status: however a call ends, one request-log line and, for
a failure, one abort with the mapped status; without a server or a cluster."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, cast

import grpc
import pytest

from server.api.calls import caller_deadline, run
from server.api.requestlog import Call, Details, create_details, log_request
from server.api.status import Status
from server.auth.errors import AuthUnavailable, Forbidden, Unauthenticated
from server.auth.identity import ANONYMOUS
from server.domain.errors import (
    BadRequest,
    ClusterFailed,
    ClusterForbidden,
    ClusterUnavailable,
    DeploymentNotFound,
    DeploymentUnusable,
    NotPermitted,
)
from server.domain.outcomes import Outcome, RuleResult
from server.kube.errors import KubeForbidden


class Aborted(Exception):
    pass


class Context:
    """What run needs of a grpc.aio ServicerContext."""

    def __init__(self, seconds_left: float | None = None) -> None:
        self.aborted: tuple[grpc.StatusCode, str] | None = None
        self._seconds_left = seconds_left

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1234"

    def time_remaining(self) -> float | None:
        return self._seconds_left

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        self.aborted = (code, details)
        raise Aborted


def grpc_context(context: Context) -> grpc.aio.ServicerContext[Any, Any]:
    return cast("grpc.aio.ServicerContext[Any, Any]", context)


def _lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        json.loads(str(record.msg))
        for record in caplog.records
        if record.name == "k8sailor.requests" and record.levelno == logging.INFO
    ]


def _call() -> Call:
    return Call("ListServices", "default", "web", ANONYMOUS)


async def test_a_call_that_succeeds_returns_its_answer_and_logs_one_ok_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "k8sailor.requests")
    context = Context()
    finished: list[bool] = []

    async def work() -> int:
        return 7

    answer = await run(
        _call(), grpc_context(context), work, lambda _: Details(became={"services": 7}),
        finish=lambda: finished.append(True),
    )  # fmt: skip
    assert answer == 7
    assert context.aborted is None
    assert finished == [True]
    [line] = _lines(caplog)
    assert line["event"] == "ListServices"
    assert line["user"] == "system:anonymous"
    assert line["status"] == "OK"
    assert line["message"] == ""
    assert line["services"] == 7
    assert line["peer"] == "ipv4:127.0.0.1:1234"
    # The RPC's own fields come after the common ones, the peer after them.
    keys = list(line)
    assert keys.index("ms") < keys.index("services") < keys.index("peer")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (BadRequest("deployment is required"), grpc.StatusCode.INVALID_ARGUMENT),
        (DeploymentNotFound('Deployment "web" not found'), grpc.StatusCode.NOT_FOUND),
        (DeploymentUnusable("no matchLabels"), grpc.StatusCode.FAILED_PRECONDITION),
        (NotPermitted("may not list NodePort"), grpc.StatusCode.PERMISSION_DENIED),
        (ClusterForbidden("the API server refused k8sailor"), grpc.StatusCode.PERMISSION_DENIED),
        (ClusterUnavailable("connection refused"), grpc.StatusCode.UNAVAILABLE),
        (ClusterFailed("the API server failed"), grpc.StatusCode.INTERNAL),
        (Unauthenticated("no credentials"), grpc.StatusCode.UNAUTHENTICATED),
        (Forbidden("may not create"), grpc.StatusCode.PERMISSION_DENIED),
        (AuthUnavailable("review failed"), grpc.StatusCode.UNAVAILABLE),
    ],
)
async def test_a_request_level_failure_is_one_line_and_one_abort_with_its_status(
    caplog: pytest.LogCaptureFixture, error: Exception, code: grpc.StatusCode
) -> None:
    caplog.set_level(logging.INFO, "k8sailor.requests")
    context = Context()

    async def work() -> None:
        raise error

    with pytest.raises(Aborted):
        await run(_call(), grpc_context(context), work, lambda _: Details(), finish=None)
    assert context.aborted == (code, str(error))
    [line] = _lines(caplog)
    assert (line["status"], line["message"]) == (code.name, str(error))


# A Kubernetes error is the domain's to read (into a RequestError): one that reaches the edge
# is a bug of ours like any other.
@pytest.mark.parametrize(
    ("error", "sentence"),
    [(ZeroDivisionError("division by zero"), "division by zero"), (KubeForbidden("no"), "no")],
)
async def test_a_bug_is_internal_in_one_sentence_with_the_traceback_in_the_log(
    caplog: pytest.LogCaptureFixture, error: Exception, sentence: str
) -> None:
    caplog.set_level(logging.INFO, "k8sailor.requests")
    context = Context()

    async def work() -> None:
        raise error

    with pytest.raises(Aborted):
        await run(_call(), grpc_context(context), work, lambda _: Details())
    assert context.aborted == (grpc.StatusCode.INTERNAL, f"internal error: {sentence}")
    [failed] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert failed.exc_info is not None
    assert failed.getMessage() == "ListServices failed unexpectedly"
    [line] = _lines(caplog)
    assert line["status"] == "INTERNAL"


async def test_a_caller_that_goes_away_is_logged_cancelled_and_nothing_is_aborted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "k8sailor.requests")
    context = Context()
    finished: list[bool] = []

    async def work() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await run(
            _call(), grpc_context(context), work, lambda _: Details(),
            finish=lambda: finished.append(True),
        )  # fmt: skip
    assert context.aborted is None
    assert finished == [True]
    [line] = _lines(caplog)
    assert (line["status"], line["message"]) == ("CANCELLED", "the caller went away")


def test_a_create_line_counts_outcomes_and_lists_results_by_index() -> None:
    results = [
        RuleResult(1, "#80:80", Outcome.DENIED, reason="Forbidden"),
        RuleResult(0, "80:8080", Outcome.CREATED, service_name="web"),
    ]
    details = create_details(2, False, Status(grpc.StatusCode.OK), results)
    assert details.denied is True
    assert details.asked == {"rules": 2, "dry_run": False}
    assert details.became["outcomes"] == {"DENIED": 1, "CREATED": 1}
    assert details.became["results"] == [
        {"index": 0, "outcome": "CREATED", "service": "web"},
        {"index": 1, "outcome": "DENIED", "service": "", "reason": "Forbidden"},
    ]
    whole = create_details(1, True, Status(grpc.StatusCode.PERMISSION_DENIED, "no"), [])
    assert whole.denied is True
    assert whole.asked["dry_run"] is True


async def test_the_callers_deadline_is_in_loop_time() -> None:
    loop = asyncio.get_running_loop()
    assert caller_deadline(grpc_context(Context())) is None
    before = loop.time()
    deadline = caller_deadline(grpc_context(Context(10.0)))
    assert deadline is not None
    assert before + 10.0 <= deadline <= loop.time() + 10.0


def test_a_create_line_has_the_fields_in_the_order_the_readme_gives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "k8sailor.requests")
    call = Call("CreateServices", "default", "web", ANONYMOUS)
    status = Status(grpc.StatusCode.OK)
    log_request(call, status, "ipv4:127.0.0.1:1234", create_details(0, False, status, []))
    [line] = _lines(caplog)
    assert list(line) == [
        "event", "user", "groups", "authn", "denied", "namespace", "deployment", "rules",
        "dry_run", "status", "message", "ms", "outcomes", "results", "peer",
    ]  # fmt: skip


def test_a_line_the_edge_writes_for_a_refusal_has_its_fields_in_their_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "k8sailor.requests")
    call = Call("ListServices", "", "", ANONYMOUS)
    status = Status(grpc.StatusCode.INVALID_ARGUMENT, "too big")
    log_request(call, status, "ipv4:127.0.0.1:1234", Details(became={"bytes": 70_000}))
    [line] = _lines(caplog)
    assert list(line) == [
        "event", "user", "groups", "authn", "namespace", "deployment", "status", "message", "ms",
        "bytes", "peer",
    ]  # fmt: skip
    assert (line["message"], line["bytes"]) == ("too big", 70_000)
