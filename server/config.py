"""The server's configuration: one frozen, validated object, built from flags and K8SAILOR_*.

Every setting is one field of :class:`ServerConfig`, declared with
:func:`~server.config_flags.setting`: its flag, its help, how to read it from text, and what
makes a value wrong. The command line, the environment variables and ``--help`` are all
generated from those fields (:mod:`server.config_flags`), so adding a setting is adding one
field here (and reading it where it is used). A flag on the command line wins over
``K8SAILOR_<FLAG>``, which wins over the default.

A value that is wrong, from wherever it came, is one :class:`ConfigError` naming where it came
from and what is wrong; ``ServerConfig(...)`` checks its values too, so no code path can build
a server with, say, zero API slots.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Final, NoReturn, TypeVar

from server.auth.settings import AuthSettings
from server.config_flags import (
    AUTH_SETTINGS,
    ConfigError,
    Flag,
    Setting,
    at_least,
    domains,
    domains_problem,
    finite_non_negative,
    host_port,
    log_level,
    namespace_list,
    namespaces_problem,
    no_check,
    one_of,
    optional_text,
    parser,
    read,
    seconds,
    whole_number,
)
from server.domain.settings import Settings
from server.kube import SERVICE_ACCOUNT_DIR
from server.rules import (
    DEFAULT_CLUSTER_DOMAIN,
    DEFAULT_NODE_PORTS,
    ExternalNamePolicy,
    NodePortRange,
    domain_problem,
    normalized_domain,
)

__all__ = ["PROG", "ConfigError", "ServerConfig", "fail", "load"]

PROG: Final = "k8sailor-server"
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS: Final = ("json", "text")
DEPLOYMENT_CACHES: Final = ("watch", "off")
CONCURRENCY_LIMITS: Final = ("adaptive", "fixed")
EVENT_LOOPS: Final = ("uvloop", "asyncio")

T = TypeVar("T")


def setting(
    default: T,
    *,
    flag: str,
    help: str,
    read: Callable[[str], T],
    check: Callable[[T], str | None] = no_check,
    metavar: str | None = None,
    repeatable: bool = False,
) -> T:
    """A dataclass field that is also a flag and a K8SAILOR_* variable (see the module doc): its
    Setting is kept in the field's metadata."""
    meta = {"setting": Setting(flag, help, read, check, metavar, repeatable=repeatable)}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ServerConfig:
    """Everything `k8sailor-server` can be told; tests build it directly with keywords."""

    listen: str = setting(
        "127.0.0.1:50051",
        flag="listen",
        help="HOST:PORT to serve on (port 0: any free port)",
        read=str,
        check=host_port,
    )
    kubeconfig: str | None = setting(
        None,
        flag="kubeconfig",
        help="kubeconfig file (default: $KUBECONFIG, in-cluster, then ~/.kube/config)",
        read=optional_text,
        metavar="PATH",
    )
    context: str | None = setting(
        None, flag="context", help="kubeconfig context", read=optional_text, metavar="NAME"
    )
    max_in_flight: int = setting(
        32,
        flag="max-concurrency",
        help="API calls in flight at once, across all requests",
        read=whole_number,
        check=at_least(1, 10_000),
        metavar="N",
    )
    max_retry_seconds: float = setting(
        60.0,
        flag="max-retry-seconds",
        help="how long one API call keeps trying after its first failure (API server "
        "unreachable, restarting or throttling), if the caller's deadline leaves room; "
        "waiting for an API call slot does not count (0: no retries)",
        read=seconds,
        check=finite_non_negative,
        metavar="SECONDS",
    )
    concurrency_limit: str = setting(
        "adaptive",
        flag="concurrency-limit",
        help="adaptive: fewer API calls in flight while the API server's latency shows them "
        "queueing there, up to --max-concurrency (see server/kube/limits.py); fixed: always "
        "--max-concurrency",
        read=lambda text: text.strip().lower(),
        check=one_of(CONCURRENCY_LIMITS),
        metavar="adaptive|fixed",
    )
    max_rules: int = setting(
        256,
        flag="max-rules",
        help="rules accepted in one request",
        read=whole_number,
        check=at_least(1, 10_000),
        metavar="N",
    )
    max_concurrent_rpcs: int = setting(
        256,
        flag="max-concurrent-rpcs",
        help="gRPC calls the server handles at once on --listen, of all callers and services "
        "(health checks on that port included); more are refused at once with "
        "RESOURCE_EXHAUSTED",
        read=whole_number,
        check=at_least(1, 100_000),
        metavar="N",
    )
    node_ports: NodePortRange = setting(
        DEFAULT_NODE_PORTS,
        flag="node-port-range",
        help="the cluster's --service-node-port-range",
        read=NodePortRange.parse,
        metavar="LOW-HIGH",
    )
    cluster_domain: str = setting(
        DEFAULT_CLUSTER_DOMAIN,
        flag="cluster-domain",
        help="the cluster's DNS domain (the kubelet's --cluster-domain): ExternalName "
        "targets under it are refused",
        read=normalized_domain,
        check=domain_problem,
        metavar="DOMAIN",
    )
    allow_external_names: tuple[str, ...] = setting(
        (),
        flag="allow-external-name",
        help="accept ExternalName targets equal to or under this suffix although they name "
        "the cluster, the node or its link (e.g. svc.cluster.local; none by default); "
        "repeatable, or "
        "comma-separated; IP addresses stay refused",
        read=domains,
        check=domains_problem,
        metavar="SUFFIX",
        repeatable=True,
    )
    grace: float = setting(
        10.0,
        flag="grace",
        help="seconds in-flight requests get to finish on SIGTERM or SIGINT",
        read=seconds,
        check=finite_non_negative,
        metavar="SECONDS",
    )
    log_level: str = setting(
        "INFO",
        flag="log-level",
        help="DEBUG, INFO, WARNING, ERROR or CRITICAL",
        read=log_level,
        check=one_of(LOG_LEVELS),
        metavar="LEVEL",
    )

    metrics_listen: str = setting(
        "",
        flag="metrics-listen",
        help="HOST:PORT to serve Prometheus /metrics on (empty: no metrics)",
        read=str.strip,
        check=lambda value: host_port(value) if value else None,
        metavar="HOST:PORT",
    )
    log_format: str = setting(
        "",
        flag="log-format",
        help="json or text (empty: json, or text when stderr is a terminal)",
        read=lambda text: text.strip().lower(),
        check=lambda value: one_of(LOG_FORMATS)(value) if value else None,
        metavar="FORMAT",
    )
    event_loop: str = setting(
        "uvloop",
        flag="event-loop",
        help="uvloop (libuv, about a tenth less CPU per request) or asyncio (the standard "
        "library's loop, for debugging)",
        read=lambda text: text.strip().lower(),
        check=one_of(EVENT_LOOPS),
        metavar="uvloop|asyncio",
    )
    deployment_cache: str = setting(
        "watch",
        flag="deployment-cache",
        help="watch: Deployments from a watch (needs list and watch on deployments); "
        "off: a GET for every request",
        read=str.strip,
        check=one_of(DEPLOYMENT_CACHES),
        metavar="watch|off",
    )
    watch_namespaces: tuple[str, ...] = setting(
        (),
        flag="watch-namespaces",
        help="comma-separated namespaces to watch Deployments in, for an install that may "
        "list them only there (default: the whole cluster)",
        read=namespace_list,
        check=namespaces_problem,
        metavar="NS,NS",
    )
    health_listen: str = setting(
        "",
        flag="health-listen",
        help="HOST:PORT of a plaintext port that serves grpc.health.v1.Health and nothing "
        "else, for the kubelet's gRPC probes, which cannot speak TLS (empty: none)",
        read=str.strip,
        check=lambda value: host_port(value) if value else None,
        metavar="HOST:PORT",
    )
    service_account_dir: str = setting(
        SERVICE_ACCOUNT_DIR,
        flag="service-account-dir",
        help="where the in-cluster configuration reads the ServiceAccount's token and ca.crt "
        "(used in a pod: KUBERNETES_SERVICE_HOST set and no kubeconfig)",
        read=str,
        metavar="DIR",
    )
    # TLS, identity and authorization: set from the flags of AUTH_SETTINGS below.
    auth: AuthSettings = field(default_factory=AuthSettings)

    def __post_init__(self) -> None:
        for name, spec in _settings():
            value = getattr(self, name)
            problem = spec.check(value)
            if problem is not None:
                raise ConfigError(f"--{spec.flag}: {problem}")
        problems = self.auth.problems(self.listen)
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def settings(self) -> Settings:
        """What the domain flows need of this configuration."""
        return Settings(
            max_rules=self.max_rules,
            node_ports=self.node_ports,
            external_names=ExternalNamePolicy(self.cluster_domain, self.allow_external_names),
        )

    @property
    def logging_level(self) -> int:
        return logging.getLevelNamesMapping()[self.log_level]


def _settings() -> list[tuple[str, Setting]]:
    return [
        (f.name, f.metadata["setting"]) for f in fields(ServerConfig) if "setting" in f.metadata
    ]


def _flags() -> list[Flag]:
    """Every flag: (argparse dest, setting, default); auth's dests start with "auth."."""
    defaults, auth_defaults = ServerConfig(), AuthSettings()
    return [
        *((name, spec, getattr(defaults, name)) for name, spec in _settings()),
        *((f"auth.{name}", spec, getattr(auth_defaults, name))
          for name, spec in AUTH_SETTINGS.items()),
    ]  # fmt: skip


def load(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> ServerConfig:
    """The configuration the command line and environment ask for, or ConfigError.

    argparse itself exits 2 with one line for an unknown flag or a missing value, and 0 for
    --help.
    """
    flags = _flags()
    description = "Expose Kubernetes Deployments through Services, over gRPC."
    given = vars(parser(PROG, description, flags).parse_args(argv))
    values = read(flags, given, os.environ if environ is None else environ)
    auth = {
        name.removeprefix("auth."): values.pop(name)
        for name in list(values)
        if name.startswith("auth.")
    }
    config = ServerConfig(**values, auth=AuthSettings(**auth))
    _check_readable(config.kubeconfig)
    return config


def _check_readable(path: str | None) -> None:
    """An unreadable kubeconfig is a configuration error, found before anything starts."""
    if path is None:
        return
    try:
        with Path(path).expanduser().open("rb") as file:
            file.read(1)
    except OSError as error:
        raise ConfigError(f"--kubeconfig: cannot read {path}: {error.strerror}") from None


def fail(message: str) -> NoReturn:
    """Print one line and exit 2: how the server ends on bad configuration. Messages from
    libraries (a YAML parser's, for one) span lines: they are joined into one."""
    sys.stderr.write(f"{PROG}: {' '.join(message.split())}\n")
    raise SystemExit(2)
