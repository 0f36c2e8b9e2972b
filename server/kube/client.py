"""Kube: the calls k8sailor makes to the API server, each with a slot, retries and an observer.

It speaks plain JSON dicts in the API server's own camelCase shape, both ways: manifests are
built as dicts by server.manifests, and answers are json-decoded (server.kube.answers), because
kubernetes_asyncio's model classes cost more CPU per object than the whole rest of a request.
The requests go through k8sailor's own session (server.kube.transport); kubernetes_asyncio
gives the configuration and credentials only. Every failure leaves this module as a
server.kube.errors.KubeError.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import client

from server.kube import paths
from server.kube.answers import (
    MAX_ANSWER_BYTES,
    MAX_EVENT_BYTES,
    Json,
    events,
    json_object,
    read_bounded,
)
from server.kube.credentials import CredentialsReload, ReloadableApiClient
from server.kube.errors import (
    LoadSignal,
    from_response,
    from_transport,
    load_signal,
)
from server.kube.fairness import FairSlots
from server.kube.limits import AdaptiveLimit, ConcurrencyLimit, FixedLimit
from server.kube.observers import CallObserver, NoObserver
from server.kube.retries import DEFAULT_RETRIES, RetryClock, Retrying, RetryPolicy
from server.kube.transport import Query, Transport

__all__ = ["FIELD_MANAGER", "Kube"]

#: The field manager of every write k8sailor makes, so that server-side apply knows its fields.
FIELD_MANAGER = "k8sailor"

_CONNECT_TIMEOUT_S = 10.0


class Kube:
    """Reads Deployments and creates Services, with a bound on calls in flight.

    The bound is process-wide (one Kube per process, shared by every request) so that a burst
    of large requests queues here instead of piling onto the API server, whose priority and
    fairness would otherwise answer with 429s. Every call is retried as RetryPolicy says and,
    when the ApiClient came from load_api_client, a 401 reloads our credentials once.

    api gives the configuration and credentials (and its default headers); the requests go
    through a session of Kube's own, made with trace_configs, which close() closes.
    """

    def __init__(
        self,
        api: client.ApiClient,
        *,
        max_in_flight: int,
        adaptive: bool = False,
        observer: CallObserver | None = None,
        retry: RetryPolicy = DEFAULT_RETRIES,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
    ) -> None:
        self._transport = Transport(
            api.configuration, headers=api.default_headers, trace_configs=trace_configs
        )
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
        credentials = (
            CredentialsReload(api.reload_credentials)
            if isinstance(api, ReloadableApiClient)
            else None
        )
        self._retrying = Retrying(retry, self._observer, credentials)

    async def close(self) -> None:
        """Close the session (its pooled connections); no call may be made after."""
        await self._transport.close()

    async def __aenter__(self) -> Kube:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    @property
    def concurrency_limit(self) -> int:
        """API calls allowed in flight now (the adaptive limit's value, or max_in_flight)."""
        return self._slots.limit

    async def read_deployment(self, namespace: str, name: str, *, timeout: float | None) -> Json:
        path = paths.deployment(namespace, name)
        return await self._call("get", "deployments", "GET", path, timeout=timeout)

    async def read_service(self, namespace: str, name: str, *, timeout: float | None) -> Json:
        path = paths.service(namespace, name)
        return await self._call("get", "services", "GET", path, timeout=timeout)

    async def create_service(
        self, namespace: str, manifest: Mapping[str, Any], *, dry_run: bool, timeout: float | None
    ) -> Json:
        return await self._call(
            "create",
            "services",
            "POST",
            paths.services(namespace),
            query=[*paths.dry_run(dry_run), ("fieldManager", FIELD_MANAGER)],
            body=manifest,
            dry_run=dry_run,
            timeout=timeout,
        )

    async def list_services(
        self, namespace: str, *, label_selector: str, timeout: float | None
    ) -> Json:
        return await self._call(
            "list",
            "services",
            "GET",
            paths.services(namespace),
            query=[("labelSelector", label_selector)],
            timeout=timeout,
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
            "DELETE",
            paths.service(namespace, name),
            body=options,
            dry_run=dry_run,
            timeout=timeout,
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
        return await self._call(
            "patch",
            "services",
            "PATCH",
            paths.service(namespace, manifest["metadata"]["name"]),
            query=[
                *paths.dry_run(dry_run),
                ("fieldManager", FIELD_MANAGER),
                ("force", paths.flag(force)),
            ],
            body=manifest,
            content_type="application/apply-patch+yaml",
            dry_run=dry_run,
            timeout=timeout,
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
            "PATCH",
            paths.service(namespace, name),
            body=patch,
            content_type="application/json-patch+json",
            timeout=timeout,
        )

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
        path = paths.TOKEN_REVIEWS
        return await self._call("create", "tokenreviews", "POST", path, body=body, timeout=timeout)

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
            "POST",
            paths.SUBJECT_ACCESS_REVIEWS,
            body=body,
            timeout=timeout,
        )

    # --- list and watch, for the Deployment cache (server/kube/deployments.py) ---------------

    async def list_deployments(
        self,
        namespace: str | None,
        *,
        limit: int,
        continue_token: str | None,
        timeout: float | None,
    ) -> Json:
        """One page of Deployments, cluster-wide when namespace is None."""
        query: list[tuple[str, str]] = [("limit", str(limit))]
        if continue_token:
            query.append(("continue", continue_token))
        path = paths.deployments(namespace)
        return await self._call("list", "deployments", "GET", path, query=query, timeout=timeout)

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
        query = [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", resource_version),
            ("timeoutSeconds", str(timeout_seconds)),
        ]
        self._observer.call_started("watch", "deployments")
        started = time.monotonic()
        code = "error"
        accepted = False  # past here, failures are the block's or the events', not ours
        try:
            async with self._transport.stream(
                paths.deployments(namespace), query=query, timeout=limits
            ) as response:
                code = str(response.status)
                if not 200 <= response.status < 300:
                    body = await response.content.read(MAX_EVENT_BYTES)
                    raise from_response(response.status, body)
                accepted = True
                yield events(response.content)
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            if accepted:
                raise
            raise from_transport(error) from error
        finally:
            # One watch is one call, however long it lasted.
            self._observer.call_finished("watch", "deployments", code, time.monotonic() - started)

    # --- one call ------------------------------------------------------------------------------

    async def _call(
        self,
        verb: str,
        resource: str,
        method: str,
        path: str,
        *,
        query: Query = (),
        body: Any = None,
        content_type: str = "application/json",
        dry_run: bool = False,
        timeout: float | None,
    ) -> Json:
        """One API call, with its retries (server.kube.retries)."""
        call = _Call(verb, resource, method, path, tuple(query), body, content_type, dry_run)

        async def attempt(deadline: float | None, clock: RetryClock) -> Json:
            return await self._attempt(call, deadline, clock)

        return await self._retrying.run(verb, resource, attempt, timeout)

    async def _attempt(self, call: _Call, deadline: float | None, clock: RetryClock) -> Json:
        loop = asyncio.get_running_loop()
        queued = loop.time()
        async with self._slots.slot() as ticket:
            now = loop.time()
            clock.waited(now - queued)
            # Measured from when the slot was taken: the wait for it is not the attempt's.
            timeout = self._retry.attempt_timeout
            if deadline is not None:
                timeout = min(timeout, max(deadline - now, 0.001))
            self._observer.call_started(call.verb, call.resource)
            started = time.monotonic()
            code = "error"
            heard: int | None = None  # the status of a whole answer, for the limit
            try:
                response = await self._transport.request(
                    call.method, call.path, query=call.query, body=call.body,
                    content_type=call.content_type, timeout=timeout,
                )  # fmt: skip
                async with response:
                    status = response.status
                    code = str(status)
                    answer = await read_bounded(response, self._max_answer_bytes)
                    headers = response.headers
                    heard = status
            except (TimeoutError, aiohttp.ServerTimeoutError) as error:
                code = "timeout"
                raise from_transport(error) from error
            except (aiohttp.ClientError, OSError) as error:
                raise from_transport(error) from error
            finally:
                seconds = time.monotonic() - started
                self._observer.call_finished(call.verb, call.resource, code, seconds)
                # For the adaptive limit: what the answer says of the API server's load.
                signal = load_signal(heard)
                if signal is LoadSignal.THROTTLED:
                    self._slots.throttled(ticket)
                elif signal is LoadSignal.MEASURED:
                    self._slots.answered(ticket, call.kind, seconds)
        if not 200 <= status < 300:
            raise from_response(status, answer, headers)
        return json_object(answer, "answer from the API server")


@dataclass(frozen=True, slots=True)
class _Call:
    """One API call as it is sent, attempt after attempt."""

    verb: str  # the Kubernetes verb, for the observer
    resource: str
    method: str  # the HTTP method
    path: str
    query: Query
    body: Any
    content_type: str
    dry_run: bool

    @property
    def kind(self) -> str:
        """What the adaptive limit keeps a baseline for: a dry run skips etcd, so it is a kind
        of call of its own."""
        return f"{self.verb} {self.resource}" + (" dry run" if self.dry_run else "")
