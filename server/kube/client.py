"""The only module that talks to Kubernetes.

It speaks plain JSON dicts in the API server's own camelCase shape, both ways: manifests are
built as dicts by server.manifests, and answers are read with `_preload_content=False` and
json-decoded, because kubernetes_asyncio's model classes cost more CPU per object than the
whole rest of a request. Every failure leaves this module as a server.kube.errors.KubeError.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import os
import random
import time
import urllib.parse
import urllib.request
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from server.kube.errors import (
    KubeError,
    KubeServerError,
    KubeUnauthorized,
    from_api_exception,
    from_response,
    from_transport,
    is_transient,
)
from server.kube.fairness import FairSlots, Ticket
from server.kube.limits import AdaptiveLimit, ConcurrencyLimit, FixedLimit
from server.kube.observers import CallObserver, NoObserver

Json = dict[str, Any]

#: The field manager of every write k8sailor makes, so that server-side apply knows its fields.
FIELD_MANAGER = "k8sailor"


# The most k8sailor reads of one answer: far above any Service or Deployment (the API server
# itself refuses objects over 1.5 MiB), room for a list of thousands of them.
MAX_ANSWER_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long one API call keeps trying, within the caller's deadline, before giving up.

    Retried: 429, 503 and 504 (after Retry-After or details.retryAfterSeconds when the API
    server gives one), any other 5xx that gives one, and connections refused, reset or timed
    out before an answer. A create is safe to send again: one that finds its Service already
    there is read and compared by the exposer.

    Tries are counted in time, not in number: an API server that restarts is gone for 10-60 s
    in real clusters, and a fixed number of quick attempts is spent in its first seconds (six
    of them were over in 3-6 s), when a restart shorter than the caller's deadline should cost
    latency, not results. A call keeps trying for up to max_retry_seconds after its first
    failure (about 20 attempts in the default minute, with the default backoff), and never past
    the caller's deadline. Time spent waiting for an API call slot is not counted: a call
    queued behind others is not trying, and must not use up its window by waiting.
    """

    # The most one call spends retrying (attempts and pauses after its first failure); 0:
    # never retried. Sixty seconds covers an API server restart in most clusters; a caller's
    # shorter deadline bounds it first.
    max_retry_seconds: float = 60.0
    first_backoff: float = 0.2  # seconds before the second attempt; doubles after each
    # Capped, so that a call comes back within seconds of the API server's return, and
    # jittered, so that the calls turned away together do not all come back together.
    max_backoff: float = 5.0
    # An attempt that has no answer by then is abandoned and tried again (when the deadline
    # leaves room): a stalled connection must not eat the caller's whole deadline.
    attempt_timeout: float = 20.0

    def __post_init__(self) -> None:
        if not 0 <= self.max_retry_seconds < math.inf:
            raise ValueError(
                f"max_retry_seconds must be a finite number >= 0, not {self.max_retry_seconds}"
            )
        # A backoff of 0 would retry in a busy loop for the whole window.
        if not 0 < self.first_backoff <= self.max_backoff:
            raise ValueError("backoffs must satisfy 0 < first_backoff <= max_backoff")
        if self.attempt_timeout <= 0:
            raise ValueError(f"attempt_timeout must be positive, not {self.attempt_timeout}")

    def pause(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based).

        Exponential backoff with jitter (between half and all of it), so that calls throttled
        together do not all come back together. With the API server's Retry-After, never less
        than it asked, and spread over as long again (or the backoff, if longer): the calls it
        turned away at once then come back spread out, not at once to be turned away again.
        """
        backoff = min(self.max_backoff, self.first_backoff * 2 ** min(attempt - 1, 64))
        if retry_after is None:
            return random.uniform(backoff / 2, backoff)
        return retry_after + random.uniform(0, max(backoff, retry_after))


NO_RETRIES = RetryPolicy(max_retry_seconds=0)


# The time a last attempt is left before the caller's deadline, at most: enough for an answer
# from a healthy API server and for the rule's result to reach the caller. The exposer stops
# waiting for rules at most half a second before the deadline; this ends the retrying first.
_LAST_ATTEMPT_ROOM_S = 1.0
# A kube-apiserver that was just unreachable (restarting) answers before all of its parts are
# ready: its Service IP allocator, say, refuses creates with a 500 "range is full" until it has
# read its ServiceCIDRs. For this long after any call found the API server unreachable, a 5xx
# is taken as that warm-up and retried like a 503, rather than as the API server's decision.
_WARM_UP_S = 15.0


class _RetryClock:
    """How long a call has been retrying: from its first failure on, less the time it then
    spent waiting for an API call slot (waiting for a turn is not trying)."""

    __slots__ = ("_loop", "_since", "_waited")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._since: float | None = None
        self._waited = 0.0

    def failed(self) -> None:
        if self._since is None:
            self._since = self._loop.time()

    def waited(self, seconds: float) -> None:
        if self._since is not None:
            self._waited += seconds

    @property
    def spent(self) -> float:
        if self._since is None:
            return 0.0
        return self._loop.time() - self._since - self._waited


class Kube:
    """Reads Deployments and creates Services, with a bound on calls in flight.

    The bound is process-wide (one Kube per process, shared by every request) so that a burst
    of large requests queues here instead of piling onto the API server, whose priority and
    fairness would otherwise answer with 429s. Every call is retried as RetryPolicy says and,
    when the ApiClient came from load_api_client, a 401 reloads our credentials once.
    """

    def __init__(
        self,
        api: client.ApiClient,
        *,
        max_in_flight: int,
        adaptive: bool = False,
        observer: CallObserver | None = None,
        retry: RetryPolicy = RetryPolicy(),
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        rest = api.rest_client
        # kubernetes_asyncio opens its aiohttp session with trust_env=True, so aiohttp looks
        # for ~/.netrc and the proxy variables in a worker thread before every single request:
        # two thread hops per API call. Resolve the proxy once instead; the Kubernetes
        # credentials are the client certificate or token, never netrc.
        if rest.proxy is None:
            rest.proxy = _env_proxy(api.configuration.host)
        rest.pool_manager._trust_env = False
        # aiohttp quietly sends a GET, PUT or DELETE again when a pooled connection drops before
        # the answer. Retries are this class's alone: it counts them, tells the observer, bounds
        # them by the deadline, and knows that a delete whose first answer was lost may have
        # done its work already (KubeError.unanswered_before).
        rest.pool_manager._retry_connection = False
        self._configuration = api.configuration
        self._core = client.CoreV1Api(api)
        self._apps = client.AppsV1Api(api)
        self._authentication = client.AuthenticationV1Api(api)
        self._authorization = client.AuthorizationV1Api(api)
        # Round robin between requests, so a big one cannot starve small ones, and with
        # `adaptive` no more in flight than the API server can work on without queueing
        # (fairness.py); max_in_flight is the ceiling.
        self._limit: ConcurrencyLimit = (
            AdaptiveLimit(max_in_flight) if adaptive else FixedLimit(max_in_flight)
        )
        self._slots = FairSlots(max_in_flight, self._limit)
        self._observer: CallObserver = observer or NoObserver()
        self._retry = retry
        self._max_answer_bytes = max_answer_bytes
        self._reload = api.reload_credentials if isinstance(api, ReloadableApiClient) else None
        self._reload_lock = asyncio.Lock()
        self._credentials_generation = 0
        self._unreachable_at: float | None = None  # loop time a call last found it down

    @property
    def concurrency_limit(self) -> int:
        """API calls allowed in flight now (the adaptive limit's value, or max_in_flight)."""
        return self._slots.limit

    async def read_deployment(self, namespace: str, name: str, *, timeout: float | None) -> Json:
        return await self._call(
            "get",
            "deployments",
            self._apps.read_namespaced_deployment,
            name,
            namespace,
            timeout=timeout,
        )

    async def read_service(self, namespace: str, name: str, *, timeout: float | None) -> Json:
        return await self._call(
            "get", "services", self._core.read_namespaced_service, name, namespace, timeout=timeout
        )

    async def create_service(
        self, namespace: str, manifest: Mapping[str, Any], *, dry_run: bool, timeout: float | None
    ) -> Json:
        extra: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
        return await self._call(
            "create",
            "services",
            self._core.create_namespaced_service,
            namespace,
            manifest,
            timeout=timeout,
            field_manager=FIELD_MANAGER,
            **extra,
        )

    async def list_services(
        self, namespace: str, *, label_selector: str, timeout: float | None
    ) -> Json:
        return await self._call(
            "list",
            "services",
            self._core.list_namespaced_service,
            namespace,
            timeout=timeout,
            label_selector=label_selector,
        )

    async def delete_service(
        self,
        namespace: str,
        name: str,
        *,
        uid: str,
        resource_version: str = "",
        dry_run: bool,
        timeout: float | None,
    ) -> Json:
        """Delete the Service only if it still has this uid (and resource_version, if given):
        one replaced or changed since it was read is refused with a 409."""
        preconditions = {"uid": uid}
        if resource_version:
            preconditions["resourceVersion"] = resource_version
        options: Json = {"preconditions": preconditions}
        if dry_run:
            # In the body: the API server reads a DELETE's options from its body when it has
            # one, and then ignores ?dryRun=All in the query.
            options["dryRun"] = ["All"]
        return await self._call(
            "delete",
            "services",
            self._core.delete_namespaced_service,
            name,
            namespace,
            timeout=timeout,
            body=options,
        )

    async def apply_service(
        self,
        namespace: str,
        manifest: Mapping[str, Any],
        *,
        force: bool,
        dry_run: bool,
        timeout: float | None,
    ) -> Json:
        """Server-side apply of the whole manifest as field manager k8sailor (JSON is YAML,
        so the manifest goes as it is)."""
        extra: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
        return await self._call(
            "patch",
            "services",
            self._core.patch_namespaced_service,
            manifest["metadata"]["name"],
            namespace,
            manifest,
            timeout=timeout,
            field_manager=FIELD_MANAGER,
            force=force,
            _content_type="application/apply-patch+yaml",
            **extra,
        )

    async def replace_managed_fields(
        self,
        namespace: str,
        name: str,
        managed_fields: list[Json],
        *,
        resource_version: str,
        timeout: float | None,
    ) -> Json:
        """Rewrite a Service's managedFields, only if it is still at resource_version (the
        JSON patch "test" fails with a 422 otherwise): how field ownership is moved between
        managers, as kubectl moves client-side apply's fields to server-side apply."""
        patch = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version},
            {"op": "replace", "path": "/metadata/managedFields", "value": managed_fields},
        ]
        return await self._call(
            "patch",
            "services",
            self._core.patch_namespaced_service,
            name,
            namespace,
            patch,
            timeout=timeout,
            _content_type="application/json-patch+json",
        )

    async def _call(
        self,
        verb: str,
        resource: str,
        method: Callable[..., Awaitable[Any]],
        *args: Any,
        timeout: float | None,
        **kwargs: Any,
    ) -> Json:
        """One API call, tried again while the API server's answer says "not now".

        timeout is what remains of the caller's deadline: no attempt and no pause between
        attempts runs past it, and a pause that would end too close to it for another
        attempt to be answered (the last fifth of the time, at most a second) is not started:
        the last error is raised instead, while there is still time to tell the caller why
        rather than just "deadline exceeded". Nor is a pause that would end past the
        policy's retry window.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        room = 0.0 if timeout is None else min(_LAST_ATTEMPT_ROOM_S, timeout / 5)
        policy = self._retry
        clock = _RetryClock(loop)
        attempt = 1
        reloaded = False
        unanswered = False  # an attempt so far got no answer, and so may have taken effect
        while True:
            generation = self._credentials_generation
            try:
                return await self._attempt(verb, resource, method, args, kwargs, deadline, clock)
            except KubeUnauthorized as error:
                if self._reload is None:
                    raise
                if reloaded:
                    raise KubeUnauthorized(
                        f"{error.message} (again after loading them anew): check the "
                        f"kubeconfig, exec plugin or service account token it runs with",
                        status=error.status,
                        reason=error.reason,
                        api_status=error.api_status,
                    ) from error
                reloaded = True
                self._observer.call_retried(verb, resource, "Unauthorized")
                await self._reload_credentials(generation, error)
            except KubeError as error:
                error.unanswered_before = unanswered
                unanswered = unanswered or _maybe_applied(error)
                if error.status is None and error.reason == "Unreachable":
                    self._unreachable_at = loop.time()
                if not is_transient(error) and not self._warming_up(error, loop.time()):
                    raise
                clock.failed()
                pause = policy.pause(attempt, error.retry_after)
                if clock.spent + pause > policy.max_retry_seconds:
                    raise
                if deadline is not None and loop.time() + pause + room >= deadline:
                    raise
                self._observer.call_retried(verb, resource, error.reason or str(error.status))
                # The slot is not held here: a throttled call must not keep others waiting.
                await asyncio.sleep(pause)
            attempt += 1

    def _warming_up(self, error: KubeError, now: float) -> bool:
        """Whether error is a 5xx from an API server that was unreachable moments ago."""
        return (
            error.status is not None
            and error.status >= 500
            and self._unreachable_at is not None
            and now - self._unreachable_at < _WARM_UP_S
        )

    async def _attempt(
        self,
        verb: str,
        resource: str,
        method: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        deadline: float | None,
        clock: _RetryClock,
    ) -> Json:
        loop = asyncio.get_running_loop()
        queued = loop.time()
        async with self._slots.slot() as ticket:
            now = loop.time()
            clock.waited(now - queued)
            # Measured from when the slot was taken: the wait for it is not the attempt's.
            timeout = self._retry.attempt_timeout
            if deadline is not None:
                timeout = min(timeout, max(deadline - now, 0.001))
            self._observer.call_started(verb, resource)
            started = time.monotonic()
            code = "error"
            heard = 0  # the status of a whole answer, for the limit; 0 while there is none
            try:
                response = await method(
                    *args, _preload_content=False, _request_timeout=timeout, **kwargs
                )
                async with response:
                    status: int = response.status
                    code = str(status)
                    body = await _read_bounded(response, self._max_answer_bytes)
                    headers = response.headers
                    heard = status
            except ApiException as error:
                code = str(error.status) if error.status else "error"
                heard = error.status or 0
                raise from_api_exception(error) from error
            except (TimeoutError, aiohttp.ServerTimeoutError) as error:
                code = "timeout"
                raise from_transport(error) from error
            except (aiohttp.ClientError, OSError) as error:
                raise from_transport(error) from error
            finally:
                seconds = time.monotonic() - started
                self._observer.call_finished(verb, resource, code, seconds)
                self._tell_limit(ticket, verb, resource, kwargs, heard, seconds)
        if not 200 <= status < 300:
            raise from_response(status, body, headers)
        return _json_object(body, "answer from the API server")

    def _tell_limit(
        self,
        ticket: Ticket,
        verb: str,
        resource: str,
        kwargs: dict[str, Any],
        status: int,
        seconds: float,
    ) -> None:
        """How the call went, for the adaptive limit: only answers the API server worked on
        measure its load (a 429 or 503 says it had too much; failed connections, timeouts and
        other 5xx say nothing about load)."""
        if status in (429, 503):
            self._slots.throttled(ticket)
        elif 200 <= status < 500:
            # A dry run skips etcd, so it is its own kind of call.
            kind = f"{verb} {resource}" + (" dry run" if "dry_run" in kwargs else "")
            self._slots.answered(ticket, kind, seconds)

    # Reviews for server.auth: who a bearer token belongs to, and what a caller may do. Both
    # are creates that store nothing; k8sailor's identity needs `create` on each resource.

    async def create_token_review(
        self, token: str, audiences: Sequence[str], *, timeout: float | None
    ) -> Json:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": list(audiences)},
        }
        return await self._call(
            "create",
            "tokenreviews",
            self._authentication.create_token_review,
            body,
            timeout=timeout,
        )

    async def create_subject_access_review(
        self, spec: Mapping[str, Any], *, timeout: float | None
    ) -> Json:
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": dict(spec),
        }
        return await self._call(
            "create",
            "subjectaccessreviews",
            self._authorization.create_subject_access_review,
            body,
            timeout=timeout,
        )

    async def _reload_credentials(self, seen: int, refused: KubeUnauthorized) -> None:
        """Load our credentials again, once for all the calls that were refused together.

        A call whose attempt began before the last reload just tries again with what that
        reload brought; only a call refused with the newest credentials reloads them.
        """
        assert self._reload is not None
        async with self._reload_lock:
            if self._credentials_generation != seen:
                return
            try:
                await self._reload()
            except Exception as error:
                raise KubeUnauthorized(
                    f"{refused.message}; loading the credentials again failed: "
                    f"{type(error).__name__}: {error}",
                    status=refused.status,
                    reason=refused.reason,
                    api_status=refused.api_status,
                ) from error
            finally:
                self._credentials_generation += 1

    # --- list and watch, for the Deployment cache (server/kube/deployments.py) -------------------

    async def list_deployments(
        self,
        namespace: str | None,
        *,
        limit: int,
        continue_token: str | None,
        timeout: float | None,
    ) -> Json:
        """One page of Deployments, cluster-wide when namespace is None."""
        extra: dict[str, Any] = {"limit": limit}
        if continue_token:
            extra["_continue"] = continue_token
        if namespace is None:
            return await self._call(
                "list",
                "deployments",
                self._apps.list_deployment_for_all_namespaces,
                timeout=timeout,
                **extra,
            )
        return await self._call(
            "list",
            "deployments",
            self._apps.list_namespaced_deployment,
            namespace,
            timeout=timeout,
            **extra,
        )

    @contextlib.asynccontextmanager
    async def watch_deployments(
        self,
        namespace: str | None,
        *,
        resource_version: str,
        timeout_seconds: int,
        read_timeout: float,
    ) -> AsyncIterator[AsyncGenerator[Json, None]]:
        """A watch of Deployments after resource_version: entering the block means the API
        server accepted it; the block gets the events ({"type": ..., "object": ...}).

        A watch is one long-lived streaming answer, so it takes no call slot (it would hold
        one for minutes) and has no total timeout: the API server ends it after
        timeout_seconds, and read_timeout ends it when nothing at all (not even a bookmark)
        arrived for that long, which is how a dead connection shows. Each event is bounded
        before it is decoded.
        """
        limits = aiohttp.ClientTimeout(
            total=None, sock_connect=_CONNECT_TIMEOUT_S, sock_read=read_timeout
        )
        # A watch holds its connection for minutes, so it gets one of its own, outside the
        # pool sized for the call slots: it never keeps a call waiting for a connection.
        async with client.ApiClient(self._configuration) as watcher:
            apps = client.AppsV1Api(watcher)
            method: Callable[..., Awaitable[Any]] = (
                apps.list_deployment_for_all_namespaces
                if namespace is None
                else functools.partial(apps.list_namespaced_deployment, namespace)
            )
            self._observer.call_started("watch", "deployments")
            started = time.monotonic()
            code = "error"
            try:
                try:
                    response: aiohttp.ClientResponse = await method(
                        watch=True,
                        allow_watch_bookmarks=True,
                        resource_version=resource_version,
                        timeout_seconds=timeout_seconds,
                        _preload_content=False,
                        _request_timeout=limits,
                    )
                except ApiException as error:
                    code = str(error.status) if error.status else "error"
                    raise from_api_exception(error) from error
                except (aiohttp.ClientError, TimeoutError, OSError) as error:
                    raise from_transport(error) from error
                async with response:
                    code = str(response.status)
                    if not 200 <= response.status < 300:
                        body = await response.content.read(_MAX_EVENT)
                        raise from_response(response.status, body)
                    yield _events(response.content)
            finally:
                # One watch is one call, however long it lasted.
                self._observer.call_finished(
                    "watch", "deployments", code, time.monotonic() - started
                )


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The answer's body, refused unread beyond limit bytes: what comes from the network is
    bounded before memory or CPU is spent on it."""
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > limit:
        raise _too_large(response.status, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise _too_large(response.status, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(status: int, limit: int) -> KubeServerError:
    return KubeServerError(
        f"the API server's answer (HTTP {status}) is larger than the {limit} bytes k8sailor "
        f"reads; it was refused unread",
        status=status,
        reason="AnswerTooLarge",
    )


def _maybe_applied(error: KubeError) -> bool:
    """True when the request may have reached the API server though no answer came back: any
    failure without an answer except one to connect at all."""
    if error.status is not None:
        return False
    return not isinstance(
        error.__cause__, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError
    )


class ReloadableApiClient(client.ApiClient):
    """An ApiClient that can load its credentials again, from where they first came.

    Exec and OIDC plugins hand out tokens that expire, token files and the in-cluster token
    are rotated on disk: when the API server answers 401, Kube calls reload_credentials()
    once and tries again. Loading runs kubernetes_asyncio's own loaders again into the live
    Configuration, so the pooled connections and everything that holds this client carry on.
    """

    def __init__(
        self,
        configuration: client.Configuration,
        load: Callable[[client.Configuration], Awaitable[None]],
    ) -> None:
        super().__init__(configuration)
        self._load = load

    async def reload_credentials(self) -> None:
        await self._load(self.configuration)


# A watch event is one object; etcd refuses objects over 1.5 MiB, so twice that is plenty.
_MAX_EVENT = 3 * 1024 * 1024
_CONNECT_TIMEOUT_S = 10.0


def _json_object(raw: bytes, what: str) -> Json:
    """raw decoded as the JSON object the API server sends, or KubeError naming what it was."""
    try:
        decoded = json.loads(raw)
    except ValueError as error:
        raise KubeError(f"unreadable {what}: {raw[:200]!r}") from error
    if not isinstance(decoded, dict):
        raise KubeError(f"unexpected {what}: {raw[:200]!r}")
    return decoded


async def _events(stream: aiohttp.StreamReader) -> AsyncGenerator[Json, None]:
    try:
        async for line in _lines(stream, _MAX_EVENT):
            yield _json_object(line, "watch event")
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        raise from_transport(error) from error


async def _lines(stream: aiohttp.StreamReader, limit: int) -> AsyncIterator[bytes]:
    """Newline-separated records of a stream, none longer than limit bytes."""
    pending = bytearray()
    async for chunk in stream.iter_any():
        pending += chunk
        while True:
            end = pending.find(b"\n")
            if end < 0:
                break
            line = bytes(pending[:end])
            del pending[: end + 1]
            if line.strip():
                yield line
        if len(pending) > limit:
            raise KubeError(f"a watch event is larger than {limit} bytes; the watch was dropped")
    if pending.strip():
        yield bytes(pending)


#: Where the kubelet mounts a pod's ServiceAccount token and the cluster CA.
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


async def load_api_client(
    kubeconfig: str | None,
    context: str | None,
    *,
    pool_size: int,
    service_account_dir: str = SERVICE_ACCOUNT_DIR,
) -> ReloadableApiClient:
    """An ApiClient for the cluster the caller means, able to reload its credentials.

    An explicit --kubeconfig or $KUBECONFIG wins; inside a pod without either, the in-cluster
    service account (its token and ca.crt from service_account_dir; the token is read again
    every minute, as the kubelet rotates it); otherwise ~/.kube/config, as kubectl does.
    """
    in_cluster = "KUBERNETES_SERVICE_HOST" in os.environ
    load: Callable[[client.Configuration], Awaitable[None]]
    if kubeconfig is None and "KUBECONFIG" not in os.environ and in_cluster:
        token = os.path.join(service_account_dir, "token")
        ca = os.path.join(service_account_dir, "ca.crt")

        async def load(configuration: client.Configuration) -> None:
            config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration, token_filename=token, cert_filename=ca
            )

    else:

        async def load(configuration: client.Configuration) -> None:
            # A new loader each time: one that ran before keeps its exec plugin's token
            # until the expiry the plugin gave, even after the API server refused it.
            await config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=configuration
            )

    configuration = client.Configuration()
    await load(configuration)
    # Enough pooled connections for every call the semaphore lets through at once.
    configuration.connection_pool_maxsize = pool_size
    return ReloadableApiClient(configuration, load)


def _env_proxy(server: str | None) -> str | None:
    """The proxy the environment (HTTPS_PROXY, NO_PROXY, ...) sets for the API server, if any."""
    url = urllib.parse.urlsplit(server or "")
    if url.hostname is None or urllib.request.proxy_bypass(url.hostname):
        return None
    return urllib.request.getproxies().get(url.scheme)
