"""The only module that talks to Kubernetes.

It speaks plain JSON dicts in the API server's own camelCase shape, both ways: manifests are
built as dicts by server.manifests, and answers are read with `_preload_content=False` and
json-decoded, because kubernetes_asyncio's model classes cost more CPU per object than the
whole rest of a request. Every failure leaves this module as a server.errors.KubeError.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from server.errors import KubeError, from_api_exception, from_response, from_transport

Json = dict[str, Any]


class CallObserver(Protocol):
    """Told about every API call as it happens: metrics, tracing and tests plug in here.

    One attempt is one call_started and one call_finished; a call that is tried again also
    gets call_retried (with why) before its next attempt. verb is the Kubernetes verb (get,
    list, watch, create, patch, delete), resource the plural ("services"), code the HTTP
    status as text, or "error"/"timeout" when no answer came. Methods must not block or raise:
    they run on the request's path.
    """

    def call_started(self, verb: str, resource: str) -> None: ...

    def call_finished(self, verb: str, resource: str, code: str, seconds: float) -> None: ...

    def call_retried(self, verb: str, resource: str, reason: str) -> None: ...


class NoObserver:
    """The default CallObserver: notices nothing."""

    def call_started(self, verb: str, resource: str) -> None:
        pass

    def call_finished(self, verb: str, resource: str, code: str, seconds: float) -> None:
        pass

    def call_retried(self, verb: str, resource: str, reason: str) -> None:
        pass


class Kube:
    """Reads Deployments and creates Services, with a bound on calls in flight.

    The bound is process-wide (one Kube per process, shared by every request) so that a burst
    of large requests queues here instead of piling onto the API server, whose priority and
    fairness would otherwise answer with 429s.
    """

    def __init__(
        self,
        api: client.ApiClient,
        *,
        max_in_flight: int,
        observer: CallObserver | None = None,
    ) -> None:
        rest = api.rest_client
        # kubernetes_asyncio opens its aiohttp session with trust_env=True, so aiohttp looks
        # for ~/.netrc and the proxy variables in a worker thread before every single request:
        # two thread hops per API call. Resolve the proxy once instead; the Kubernetes
        # credentials are the client certificate or token, never netrc.
        if rest.proxy is None:
            rest.proxy = _env_proxy(api.configuration.host)
        rest.pool_manager._trust_env = False
        self._core = client.CoreV1Api(api)
        self._apps = client.AppsV1Api(api)
        self._authentication = client.AuthenticationV1Api(api)
        self._authorization = client.AuthorizationV1Api(api)
        self._slots = asyncio.Semaphore(max_in_flight)
        self._observer: CallObserver = observer or NoObserver()

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
            **extra,
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
        async with self._slots:
            self._observer.call_started(verb, resource)
            started = time.monotonic()
            code = "error"
            try:
                response = await method(
                    *args, _preload_content=False, _request_timeout=timeout, **kwargs
                )
                async with response:
                    status: int = response.status
                    code = str(status)
                    body: bytes = await response.read()
            except ApiException as error:
                code = str(error.status) if error.status else "error"
                raise from_api_exception(error) from error
            except (TimeoutError, aiohttp.ServerTimeoutError) as error:
                code = "timeout"
                raise from_transport(error) from error
            except (aiohttp.ClientError, OSError) as error:
                raise from_transport(error) from error
            finally:
                self._observer.call_finished(verb, resource, code, time.monotonic() - started)
        if not 200 <= status < 300:
            raise from_response(status, body)
        try:
            decoded = json.loads(body)
        except ValueError as error:
            raise KubeError(f"unreadable answer from the API server: {body[:200]!r}") from error
        if not isinstance(decoded, dict):
            raise KubeError(f"unexpected answer from the API server: {body[:200]!r}")
        return decoded

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


async def load_api_client(
    kubeconfig: str | None, context: str | None, *, pool_size: int
) -> client.ApiClient:
    """An ApiClient for the cluster the caller means.

    An explicit --kubeconfig or $KUBECONFIG wins; inside a pod without either, the in-cluster
    service account; otherwise ~/.kube/config, as kubectl does.
    """
    configuration = client.Configuration()
    in_cluster = "KUBERNETES_SERVICE_HOST" in os.environ
    if kubeconfig is None and "KUBECONFIG" not in os.environ and in_cluster:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        await config.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
    # Enough pooled connections for every call the semaphore lets through at once.
    configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration)


def _env_proxy(server: str | None) -> str | None:
    """The proxy the environment (HTTPS_PROXY, NO_PROXY, ...) sets for the API server, if any."""
    url = urllib.parse.urlsplit(server or "")
    if url.hostname is None or urllib.request.proxy_bypass(url.hostname):
        return None
    return urllib.request.getproxies().get(url.scheme)
