"""`k8sailor-server`: serve ExposureService until SIGTERM or SIGINT, then drain and exit 0.

Exit status 2, with one line on stderr and never a traceback, when the configuration is wrong
(a flag, a K8SAILOR_* value, an OTEL_* value, the kubeconfig, a busy port); 1 when a second
signal cut the drain short. Once the configuration is read, every line is a log line in
--log-format (JSON outside a terminal), fatal errors too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

from server.app import ListenError, serve_until_signalled
from server.config import PROG, ConfigError, ServerConfig, fail, load
from server.kube import load_api_client
from server.observability import logs

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("k8sailor.server")


def _fatal(message: str, log_format: str) -> NoReturn:
    """fail(), as a log line when the logs are JSON: still one line, still exit 2."""
    if log_format != "json":
        fail(message)
    log.critical("%s: %s", PROG, " ".join(message.split()))
    raise SystemExit(2)


def _tracer_provider(log_format: str) -> TracerProvider | None:
    """The SDK provider the OTEL_* environment asks for; None (tracing off) when it asks none."""
    if not any(name.startswith("OTEL_") for name in os.environ):
        return None  # the common case: not even the SDK is imported
    from server.observability.tracing import TracingConfigError, provider_from_env

    try:
        return provider_from_env(os.environ)
    except TracingConfigError as error:
        _fatal(str(error), log_format)


def _configuration(config: ServerConfig, tracing: bool) -> logs.Fields:
    """The start-up line that says what this process was told (no secrets: file paths only)."""
    settings = {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}
    return logs.Fields({"event": "configuration", **settings, "tracing": tracing})


async def _main(config: ServerConfig, log_format: str, tracer: TracerProvider | None) -> int:
    try:
        api = await load_api_client(
            config.kubeconfig,
            config.context,
            pool_size=config.max_in_flight,
            service_account_dir=config.service_account_dir,
        )
    # kubernetes_asyncio raises ConfigException, OSError, yaml errors or plain ValueErrors and
    # TypeErrors for a kubeconfig it cannot use, depending on where in the file the problem is.
    except Exception as error:
        _fatal(
            f"no usable cluster configuration: {error} (set --kubeconfig or KUBECONFIG)",
            log_format,
        )
    log.info(_configuration(config, tracer is not None))
    async with api:
        try:
            return await serve_until_signalled(api, config, tracer_provider=tracer)
        except ListenError as error:
            _fatal(str(error), log_format)


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop to serve on. uvloop runs the loop's own work (scheduling, sockets,
    timers) in C: grpc.aio runs on any asyncio loop, and about a third of a one-rule request's
    server CPU is the loop and the callbacks it runs (bench/results/profile-one-rule.md)."""
    if name == "asyncio":
        return None  # asyncio.Runner's default: a new standard-library loop
    import uvloop

    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = load(argv)
    except ConfigError as error:
        fail(str(error))
    log_format = config.log_format or logs.default_format(sys.stderr)
    logs.configure(log_format, config.logging_level)
    tracer = _tracer_provider(log_format)
    try:
        with asyncio.Runner(loop_factory=_loop_factory(config.event_loop)) as runner:
            return runner.run(_main(config, log_format, tracer))
    finally:
        if tracer is not None:
            tracer.shutdown()  # the spans still batched go out before the process ends


if __name__ == "__main__":
    sys.exit(main())
