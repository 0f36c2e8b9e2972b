"""k8sailor's own HTTP session to the API server.

kubernetes_asyncio gives the configuration and the credentials (the kubeconfig or in-cluster
loaders, the exec plugin's and token file's refresh); the requests go through an
aiohttp.ClientSession of ours, as kopf's and lightkube's do, so that everything about how they
are sent is chosen here, through aiohttp's public API:

- TLS from the Configuration: its CA, its client certificate, verify_ssl, the server name.
- No `trust_env`: aiohttp would look for ~/.netrc and the proxy variables in a worker thread
  before every single request (two thread hops per API call). The proxy the environment names
  for the API server is resolved once instead; the Kubernetes credentials are the client
  certificate or token, never netrc.
- No quiet second try. aiohttp sends a GET, PUT or DELETE again by itself when a pooled
  connection drops before the answer. Retries are Kube's alone (server.kube.retries): it
  counts them, tells the observer, bounds them by the deadline, and knows that a call whose
  first answer was lost may have done its work already (KubeError.may_have_applied). So a
  dropped answer leaves aiohttp as AnswerLost, which it does not retry.
- Trace configs given when the session is made (server.app passes tracing's), never added to
  a session later.

A watch holds its connection for minutes, so each gets a session of its own (`stream`),
outside the pool sized for the call slots: it never keeps a call waiting for a connection.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import aiohttp
from kubernetes_asyncio import client

__all__ = ["AnswerLost", "Query", "Transport"]

Query = Sequence[tuple[str, str]]

# A watch event may hold a whole object (etcd takes up to 1.5 MiB): a read buffer that size
# keeps aiohttp from splitting such lines many times over.
_READ_BUFFER = 2**21


class AnswerLost(aiohttp.ClientConnectionError):
    """The connection dropped after the request was sent, before its whole answer: it may have
    reached the API server. Not one of the errors aiohttp retries on its own."""


async def _no_quiet_retry(
    request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    """Pass every failure on, as AnswerLost when aiohttp would otherwise try again by itself
    (see the module doc). A failure to connect at all is not retried by aiohttp, and is
    passed on as it is: it could not have reached the API server."""
    try:
        return await handler(request)
    except aiohttp.ClientConnectorError:
        raise
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as error:
        raise AnswerLost(str(error) or type(error).__name__) from error


def _ssl_context(configuration: client.Configuration) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, keyfile=configuration.key_file)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if configuration.disable_strict_ssl_verification:
        context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    return context


def _env_proxy(server: str | None) -> str | None:
    """The proxy the environment (HTTPS_PROXY, NO_PROXY, ...) sets for the API server, if any."""
    url = urllib.parse.urlsplit(server or "")
    if url.hostname is None or urllib.request.proxy_bypass(url.hostname):
        return None
    return urllib.request.getproxies().get(url.scheme)


class Transport:
    """Requests to the API server of one Configuration, through a session of ours.

    The pooled session is opened at the first request (aiohttp wants a running loop) with
    configuration.connection_pool_maxsize connections; close() closes it. headers go with
    every request (the ApiClient's default headers: its User-Agent).
    """

    def __init__(
        self,
        configuration: client.Configuration,
        *,
        headers: Mapping[str, str] | None = None,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
    ) -> None:
        self._configuration = configuration
        self._headers = dict(headers or {})
        self._trace_configs = tuple(trace_configs)
        self._ssl = _ssl_context(configuration)
        self._proxy: str | None = configuration.proxy or _env_proxy(configuration.host)
        self._session: aiohttp.ClientSession | None = None

    def _open(self, pool_size: int | None) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=pool_size or 100, ssl=self._ssl),
            trust_env=False,
            trace_configs=list(self._trace_configs),
            middlewares=(_no_quiet_retry,),
            read_bufsize=_READ_BUFFER,
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Query = (),
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | aiohttp.ClientTimeout | None,
    ) -> aiohttp.ClientResponse:
        """Send one request; the answer's status and headers are in, its body is not read
        (the caller reads it, bounded, and releases it with `async with`)."""
        if self._session is None:
            self._session = self._open(self._configuration.connection_pool_maxsize)
        return await self._send(self._session, method, path, query, body, content_type, timeout)

    @contextlib.asynccontextmanager
    async def stream(
        self, path: str, *, query: Query, timeout: aiohttp.ClientTimeout
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A long GET (a watch) on a connection of its own, closed when the block ends."""
        async with self._open(1) as session:
            response = await self._send(session, "GET", path, query, None, "", timeout)
            async with response:
                yield response

    async def _send(
        self,
        session: aiohttp.ClientSession,
        method: str,
        path: str,
        query: Query,
        body: Any,
        content_type: str,
        timeout: float | aiohttp.ClientTimeout | None,
    ) -> aiohttp.ClientResponse:
        configuration = self._configuration
        headers = {**self._headers, "Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        # The credentials are read for every request: the loaders refresh an exec plugin's
        # or a token file's token here when it is due, and a 401 reload changes them.
        for setting in (await configuration.auth_settings()).values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[setting["key"]] = setting["value"]
        url = (configuration.host or "") + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        if timeout is None or isinstance(timeout, aiohttp.ClientTimeout):
            limits = timeout or aiohttp.ClientTimeout()
        else:
            limits = aiohttp.ClientTimeout(total=timeout)
        return await session.request(
            method,
            url,
            data=None if body is None else json.dumps(body),
            headers=headers,
            timeout=limits,
            proxy=self._proxy,
            proxy_headers=configuration.proxy_headers,
            server_hostname=configuration.tls_server_name,
        )
