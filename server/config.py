"""The server's configuration: one frozen, validated object, built from flags and K8SAILOR_*.

Every setting is one field of :class:`ServerConfig`, declared with :func:`setting`: its flag,
its help, how to read it from text, and what makes a value wrong. The command line, the
environment variables and ``--help`` are all generated from those fields, so adding a setting
is adding one field here (and reading it where it is used). A flag on the command line wins
over ``K8SAILOR_<FLAG>``, which wins over the default.

A value that is wrong, from wherever it came, is one :class:`ConfigError` naming where it came
from and what is wrong; ``ServerConfig(...)`` checks its values too, so no code path can build
a server with, say, zero API slots.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final, NoReturn, TypeVar

from server.auth.identity import trust_domain_problem
from server.auth.settings import Authorization, AuthSettings, mesh_socket
from server.domain.settings import Settings
from server.kube import SERVICE_ACCOUNT_DIR
from server.rules import (
    DEFAULT_CLUSTER_DOMAIN,
    DEFAULT_NODE_PORTS,
    ExternalNamePolicy,
    NodePortRange,
    dns1123_label_problem,
    domain_problem,
    normalized_domain,
)

T = TypeVar("T")

PROG: Final = "k8sailor-server"
ENV_PREFIX: Final = "K8SAILOR_"
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS: Final = ("json", "text")
DEPLOYMENT_CACHES: Final = ("watch", "off")
CONCURRENCY_LIMITS: Final = ("adaptive", "fixed")
EVENT_LOOPS: Final = ("uvloop", "asyncio")


class ConfigError(ValueError):
    """A setting whose value is wrong; str() is the one line the server prints before exit 2."""


# --- readers: text -> value, raising ValueError with a message a person understands ---------


def whole_number(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None


def seconds(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds") from None
    return value


def optional_text(text: str) -> str | None:
    return text or None


def log_level(text: str) -> str:
    return text.strip().upper()


# --- checks: value -> the problem with it, or None --------------------------------------------


def at_least(low: int, high: int) -> Callable[[int], str | None]:
    def check(value: int) -> str | None:
        if not low <= value <= high:
            return f"{value} is outside {low}-{high}"
        return None

    return check


def finite_non_negative(value: float) -> str | None:
    if not math.isfinite(value) or value < 0:
        return f"{value} is not a finite number of seconds >= 0"
    return None


def host_port(value: str) -> str | None:
    host, colon, port = value.rpartition(":")
    if not colon or not host or not re.fullmatch(r"[0-9]{1,5}", port) or int(port) > 65535:
        return f"{value!r} is not HOST:PORT with a port 0-65535 (e.g. 127.0.0.1:50051)"
    # gRPC reads "unix:PATH:1" as a Unix socket, whose calls the edge would take for the mesh
    # proxy's (only --mesh-listen may be one): a host is a name or an address, never a path.
    if "/" in host or host.lower().startswith(("unix:", "unix-abstract:", "vsock:")):
        return f"{value!r} is not HOST:PORT: a Unix socket is only for --mesh-listen unix:PATH"
    return None


def one_of(choices: Sequence[str]) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        if value not in choices:
            return f"{value!r} is not one of {', '.join(choices)}"
        return None

    return check


def namespace_list(text: str) -> tuple[str, ...]:
    """ "a, b" -> ("a", "b"); empty: ()."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def namespaces_problem(value: tuple[str, ...]) -> str | None:
    for namespace in value:
        problem = dns1123_label_problem(namespace)
        if problem is not None:
            return (
                f"{namespace!r} is not a namespace name (a lowercase DNS-1123 label): it {problem}"
            )
    return None


def _no_check(_: object) -> None:
    return None


def domains(text: str) -> tuple[str, ...]:
    """ "svc.cluster.local, .Example.ORG." -> ("svc.cluster.local", "example.org"); a DNS
    name means the same in any case and with or without its dots at either end."""
    return tuple(normalized_domain(part) for part in text.split(",") if part.strip())


def domains_problem(value: tuple[str, ...]) -> str | None:
    for domain in value:
        problem = domain_problem(domain)
        if problem is not None:
            return problem
    return None


def boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{text!r} is neither true nor false")


def optional_path(text: str) -> Path | None:
    return Path(text.strip()).expanduser() if text.strip() else None


def audiences(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(","))


def trust_domains(text: str) -> tuple[str, ...]:
    """ "a, b" -> ("a", "b"): also how repeated --spiffe-trust-domain flags arrive."""
    return tuple(dict.fromkeys(part.strip() for part in text.split(",")))


def trust_domains_problem(values: tuple[str, ...]) -> str | None:
    return next(filter(None, map(trust_domain_problem, values)), None)


def authorization_mode(text: str) -> Authorization:
    try:
        return Authorization(text.strip().lower())
    except ValueError:
        choices = ", ".join(mode.value for mode in Authorization)
        raise ValueError(f"{text!r} is not one of {choices}") from None


@dataclass(frozen=True)
class Setting:
    """How one ServerConfig field is set from outside: stored in the field's metadata."""

    flag: str  # without the leading "--"; the environment variable is K8SAILOR_<FLAG>
    help: str
    read: Callable[[str], Any]
    check: Callable[[Any], str | None]
    metavar: str | None = None
    # The value a bare --flag means (switches such as --insecure); None: a value is required.
    const: str | None = None
    # May be given more than once; the values are read as one comma-separated text.
    repeatable: bool = False

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.flag.upper().replace("-", "_")


def setting(
    default: T,
    *,
    flag: str,
    help: str,
    read: Callable[[str], T],
    check: Callable[[T], str | None] = _no_check,
    metavar: str | None = None,
    repeatable: bool = False,
) -> T:
    """A dataclass field that is also a flag and a K8SAILOR_* variable (see the module doc)."""
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
        "queueing there, up to --max-concurrency (see server/kube/fairness.py); fixed: always "
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
        """What the exposer needs of this configuration."""
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


# The flags of ServerConfig.auth, by AuthSettings field. AuthSettings.problems() checks how
# they go together (and with --listen) when ServerConfig is built.
AUTH_SETTINGS: Final[dict[str, Setting]] = {
    "tls_cert_file": Setting(
        "tls-cert-file",
        "PEM certificate (chain) to serve TLS with; read again when it changes on disk",
        optional_path, _no_check, "PATH",
    ),
    "tls_private_key_file": Setting(
        "tls-private-key-file", "PEM private key of --tls-cert-file", optional_path,
        _no_check, "PATH",
    ),
    "client_ca_file": Setting(
        "client-ca-file",
        "PEM CAs that client certificates must be signed by: require mutual TLS",
        optional_path, _no_check, "PATH",
    ),
    "token_audiences": Setting(
        "token-audience",
        "audiences a bearer token must be issued for, comma-separated",
        audiences, lambda values: None if all(values) else "an audience is empty",
        "AUDIENCE[,AUDIENCE]",
    ),
    "authorization": Setting(
        "authorization",
        "rbac (SubjectAccessReviews; the default with TLS or --mesh-listen) or none (the "
        "default without either)",
        authorization_mode, _no_check, "MODE",
    ),
    "mesh_listen": Setting(
        "mesh-listen",
        "also serve on this Unix socket (unix:/path), for the mesh sidecar only: the one "
        "listener where the caller is taken from its x-forwarded-client-cert header",
        mesh_socket, _no_check, "unix:PATH",
    ),
    "spiffe_trust_domains": Setting(
        "spiffe-trust-domain",
        "a trust domain whose SPIFFE IDs (certificate URI SANs, x-forwarded-client-cert) "
        "are believed; repeat the flag or separate with commas",
        trust_domains, trust_domains_problem, "DOMAIN", repeatable=True,
    ),
    "trust_forwarded_client_cert": Setting(
        "trust-forwarded-client-cert",
        "deprecated, does nothing beside --mesh-listen and is refused without it",
        boolean, _no_check, "BOOL", const="true",
    ),
    "insecure": Setting(
        "insecure",
        "allow a non-loopback --listen without TLS or with --authorization=none, and "
        "--mesh-listen with --authorization=none (warns)",
        boolean, _no_check, "BOOL", const="true",
    ),
}  # fmt: skip


def _flags() -> list[tuple[str, Setting, Any]]:
    """Every flag: (argparse dest, setting, default); auth's dests start with "auth."."""
    defaults, auth_defaults = ServerConfig(), AuthSettings()
    return [
        *((name, spec, getattr(defaults, name)) for name, spec in _settings()),
        *((f"auth.{name}", spec, getattr(auth_defaults, name))
          for name, spec in AUTH_SETTINGS.items()),
    ]  # fmt: skip


def _shown(default: Any) -> str:
    if default is None or default == ():
        return ""
    if isinstance(default, tuple):
        default = ",".join(default)
    return f"default {default}; "


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, not argparse's usage block: the same shape as every other bad value."""
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Expose Kubernetes Deployments through Services, over gRPC.",
        epilog="Every flag can also be set as K8SAILOR_<FLAG> in the environment "
        "(K8SAILOR_MAX_CONCURRENCY=64); a flag on the command line wins.",
    )
    for name, spec, default in _flags():
        parser.add_argument(
            f"--{spec.flag}",
            dest=name,
            metavar=spec.metavar or spec.flag.upper().replace("-", "_"),
            # Kept as text: converted below, after --help has had its chance, so a bad
            # environment value cannot break --help and every error names its source.
            default=None,
            help=f"{spec.help} ({_shown(default)}${spec.env})",
            **(
                {"action": "append"}
                if spec.repeatable
                # A switch may stand alone (--insecure) or take a value (--insecure=false).
                else {"nargs": None if spec.const is None else "?", "const": spec.const}
            ),
        )
    return parser


def load(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> ServerConfig:
    """The configuration the command line and environment ask for, or ConfigError.

    argparse itself exits 2 with one line for an unknown flag or a missing value, and 0 for
    --help.
    """
    env = os.environ if environ is None else environ
    given = vars(_parser().parse_args(argv))
    values: dict[str, Any] = {}
    auth: dict[str, Any] = {}
    for name, spec, _ in _flags():
        if given[name] is not None:
            source, text = f"--{spec.flag}", given[name]
            if spec.repeatable:
                text = ",".join(text)
        elif spec.env in env:
            source, text = spec.env, env[spec.env]
        else:
            continue
        try:
            value = spec.read(text)
        except ValueError as error:
            raise ConfigError(f"{source}: {error}") from None
        problem = spec.check(value)
        if problem is not None:
            raise ConfigError(f"{source}: {problem}")
        if name.startswith("auth."):
            auth[name.removeprefix("auth.")] = value
        else:
            values[name] = value
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
