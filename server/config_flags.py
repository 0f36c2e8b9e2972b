"""Flags and K8SAILOR_* variables: how a setting is declared, read from text and checked.

A :class:`Setting` says how one configuration field is set from outside: its flag, its help,
how to read its value from text, and what makes a value wrong. :mod:`server.config` declares
its fields with ``setting()``; this module turns those declarations into the command line
(:func:`parser`) and reads the values back (:func:`read`), from the command line first, then
from ``K8SAILOR_<FLAG>``. A wrong value is one :class:`ConfigError` naming where it came from.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NoReturn

from server.auth.identity import trust_domain_problem
from server.auth.settings import Authorization, mesh_socket
from server.rules import dns1123_label_problem, domain_problem, normalized_domain

ENV_PREFIX: Final = "K8SAILOR_"


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


def no_check(_: object) -> None:
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


#: One flag: (argparse dest, its setting, its default).
Flag = tuple[str, Setting, Any]


# The flags of ServerConfig.auth, by AuthSettings field. AuthSettings.problems() checks how
# they go together (and with --listen) when ServerConfig is built.
AUTH_SETTINGS: Final[dict[str, Setting]] = {
    "tls_cert_file": Setting(
        "tls-cert-file",
        "PEM certificate (chain) to serve TLS with; read again when it changes on disk",
        optional_path, no_check, "PATH",
    ),
    "tls_private_key_file": Setting(
        "tls-private-key-file", "PEM private key of --tls-cert-file", optional_path,
        no_check, "PATH",
    ),
    "client_ca_file": Setting(
        "client-ca-file",
        "PEM CAs that client certificates must be signed by: require mutual TLS",
        optional_path, no_check, "PATH",
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
        authorization_mode, no_check, "MODE",
    ),
    "mesh_listen": Setting(
        "mesh-listen",
        "also serve on this Unix socket (unix:/path), for the mesh sidecar only: the one "
        "listener where the caller is taken from its x-forwarded-client-cert header",
        mesh_socket, no_check, "unix:PATH",
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
        boolean, no_check, "BOOL", const="true",
    ),
    "insecure": Setting(
        "insecure",
        "allow a non-loopback --listen without TLS or with --authorization=none, and "
        "--mesh-listen with --authorization=none (warns)",
        boolean, no_check, "BOOL", const="true",
    ),
}  # fmt: skip


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


def parser(prog: str, description: str, flags: Sequence[Flag]) -> argparse.ArgumentParser:
    """The command line of these flags, each keeping its value as text (see :func:`read`)."""
    parser = _Parser(
        prog=prog,
        description=description,
        epilog="Every flag can also be set as K8SAILOR_<FLAG> in the environment "
        "(K8SAILOR_MAX_CONCURRENCY=64); a flag on the command line wins.",
    )
    for name, spec, default in flags:
        parser.add_argument(
            f"--{spec.flag}",
            dest=name,
            metavar=spec.metavar or spec.flag.upper().replace("-", "_"),
            # Kept as text: converted by read(), after --help has had its chance, so a bad
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


def read(
    flags: Sequence[Flag], given: Mapping[str, Any], environ: Mapping[str, str]
) -> dict[str, Any]:
    """The values set, by dest: from the command line (``given``: argparse's namespace as a
    dict), else from the environment; a flag set in neither is left out. ConfigError for a
    value that cannot be read or is wrong, naming the flag or variable it came from."""
    values: dict[str, Any] = {}
    for name, spec, _ in flags:
        if given[name] is not None:
            source, text = f"--{spec.flag}", given[name]
            if spec.repeatable:
                text = ",".join(text)
        elif spec.env in environ:
            source, text = spec.env, environ[spec.env]
        else:
            continue
        try:
            value = spec.read(text)
        except ValueError as error:
            raise ConfigError(f"{source}: {error}") from None
        problem = spec.check(value)
        if problem is not None:
            raise ConfigError(f"{source}: {problem}")
        values[name] = value
    return values
