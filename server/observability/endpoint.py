"""The HTTP server behind /metrics: prometheus_client's WSGI app, served by a bounded number of
threads, each connection given a deadline. The metrics it serves are defined in
server.observability.metrics; :func:`serve_metrics` starts it on --metrics-listen.

prometheus_client's own server starts a thread per connection and never times one out, so
every idle TCP connection to the port holds a thread for as long as its peer likes. Here:

- at most WORKERS connections are served at once, by a pool of that many threads; up to
  WAITING more wait for one; a connection beyond those is closed as soon as it is accepted;
- a connection's request must have arrived within REQUEST_SECONDS of its acceptance, however
  slowly it trickles in (a deadline, not an idle timeout per read), or it is closed; a scrape
  sends its GET at once, and Prometheus' own default scrape timeout is 10 s.

It still runs on threads of its own, so that a scrape never waits for the event loop.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import re
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import WSGIApplication

import prometheus_client

from server.listening import ListenError

# What is served: every metric is registered when its module is imported.
from server.observability import metrics  # noqa: F401

#: Connections served at once (a scrape takes a few milliseconds).
WORKERS: Final = 4
#: Connections accepted and waiting for a worker; beyond them a connection is closed at once.
WAITING: Final = 16
#: How long a connection has to send its request, from its acceptance.
REQUEST_SECONDS = 10.0  # not Final: tests shorten it


class _DeadlineReader(io.RawIOBase):
    """A socket's bytes, each read given what is left of the deadline (TimeoutError after)."""

    def __init__(self, connection: socket.socket, deadline: float) -> None:
        self._connection = connection
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request did not arrive in time")
        self._connection.settimeout(remaining)
        return self._connection.recv_into(buffer)


class _Handler(WSGIRequestHandler):
    """One request per connection, read against the deadline; no access log."""

    server: _BoundedServer

    def setup(self) -> None:
        super().setup()
        self.rfile.close()
        # From the connection's acceptance, not from when a worker got to it: idle ones waiting
        # for a worker must not each hold the port for another REQUEST_SECONDS.
        deadline = self.server.deadline_of(self.connection)
        self.connection.settimeout(REQUEST_SECONDS)  # writes: each send at most this long
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, deadline))

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged."""


class _BoundedServer(WSGIServer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Before the base's __init__, which binds, and closes the server if it cannot.
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="k8sailor-metrics")
        self._slots = threading.BoundedSemaphore(WORKERS + WAITING)
        self._open: dict[socket.socket, float] = {}  # connection -> its request's deadline
        self._lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # neither served nor waiting: closed at once
            return
        with self._lock:
            self._open[request] = time.monotonic() + REQUEST_SECONDS
        try:
            self._pool.submit(self._serve, request, client_address)
        except RuntimeError:  # the pool is shut down: the server is closing
            self._done(request)

    def _serve(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self._done(request)

    def deadline_of(self, request: socket.socket) -> float:
        with self._lock:
            return self._open.get(request, time.monotonic())

    def _done(self, request: Any) -> None:
        with self._lock:
            self._open.pop(request, None)
        self.shutdown_request(request)
        self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A peer that was too slow or went away is no error of ours (the base prints a
        # traceback to stderr for each).
        if isinstance(sys.exc_info()[1], (TimeoutError, OSError)):
            return
        super().handle_error(request, client_address)

    def server_close(self) -> None:
        super().server_close()
        # Connections still open are cut, so that no worker waits out a deadline.
        with self._lock:
            still_open = list(self._open)
        for request in still_open:
            with contextlib.suppress(OSError):  # closed already
                request.shutdown(socket.SHUT_RDWR)
        self._pool.shutdown(wait=True, cancel_futures=True)


def serve_wsgi(host: str, port: int, app: WSGIApplication) -> tuple[WSGIServer, threading.Thread]:
    """app served on host:port (port 0: a free one) by a thread of its own; OSError when it
    cannot listen there. Stop it with server.shutdown(), server.server_close(), thread.join()."""
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    # The family of the address (IPv6 too), as http.server picks it.
    server_class = type("MetricsServer", (_BoundedServer,), {"address_family": family})
    server: WSGIServer = make_server(
        str(address[0]), port, app, server_class, handler_class=_Handler
    )
    thread = threading.Thread(target=server.serve_forever, name="k8sailor-metrics", daemon=True)
    thread.start()
    return server, thread


@dataclass(frozen=True)
class MetricsEndpoint:
    """/metrics being served: prometheus_client's WSGI app on the bounded server above, on
    threads of its own, so a scrape never waits for the event loop and a busy event loop never
    makes a scrape time out."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def split_address(address: str) -> tuple[str, int]:
    """HOST:PORT (or [IPv6]:PORT) as (host, port), or ValueError saying what is wrong."""
    host, colon, port = address.rpartition(":")
    if not colon or not host or not re.fullmatch(r"[0-9]{1,5}", port) or int(port) > 65535:
        raise ValueError(f"{address!r} is not HOST:PORT with a port 0-65535 (e.g. 0.0.0.0:9090)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)  # ValueError names the address
    return host, int(port)


def serve_metrics(address: str) -> MetricsEndpoint:
    """Serve /metrics on address (HOST:PORT; port 0 picks a free one)."""
    host, port = split_address(address)
    try:
        # Not prometheus_client.start_http_server: a thread per connection, never timed out.
        server, thread = serve_wsgi(host, port, prometheus_client.make_wsgi_app())
    except OSError as error:
        raise ListenError(
            f"cannot serve metrics on {address} (--metrics-listen): {error.strerror or error}"
        ) from error
    return MetricsEndpoint(server, thread)
