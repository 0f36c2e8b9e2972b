"""Transport and access settings, and the rules for which combinations are safe to run.

The defaults keep `make run` as it was (loopback, plaintext, no authorization), and everything
that would expose the port to others without TLS or without authorization has to be asked for
by name with --insecure.
"""

from __future__ import annotations

import enum
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from server.auth.identity import DEFAULT_TRUST_DOMAIN, trust_domain_problem

DEFAULT_TOKEN_AUDIENCE = "k8sailor"
# sun_path of struct sockaddr_un is 108 bytes on Linux, one of them the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107


class Authorization(enum.StrEnum):
    RBAC = "rbac"  # SubjectAccessReviews against the cluster's RBAC
    NONE = "none"  # anyone who reaches the port may do anything k8sailor may


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """What --tls-cert-file, --client-ca-file, --authorization and friends say.

    authorization None means the default: rbac when TLS or the mesh socket is on, none
    otherwise.
    """

    tls_cert_file: Path | None = None
    tls_private_key_file: Path | None = None
    client_ca_file: Path | None = None
    insecure: bool = False
    token_audiences: tuple[str, ...] = (DEFAULT_TOKEN_AUDIENCE,)
    authorization: Authorization | None = None
    # The Unix socket only the mesh sidecar reaches (--mesh-listen unix:PATH): the one place
    # where x-forwarded-client-cert is believed. A TCP port never is, loopback or not:
    # `kubectl port-forward` and every other container of the pod arrive on loopback too.
    mesh_listen: Path | None = None
    # Deprecated: it once meant "believe the header from loopback peers". Now refused without
    # mesh_listen, and a no-op (with a warning) beside it.
    trust_forwarded_client_cert: bool = False
    spiffe_trust_domains: tuple[str, ...] = (DEFAULT_TRUST_DOMAIN,)
    # How long review answers are reused (see server.auth.tokens and server.auth.access).
    token_ttl: float = 120.0
    allowed_ttl: float = 60.0
    denied_ttl: float = 10.0

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def mode(self) -> Authorization:
        if self.authorization is not None:
            return self.authorization
        return Authorization.RBAC if self.tls or self.mesh_listen else Authorization.NONE

    def problems(self, listen: str) -> list[str]:
        """Why these settings must not be served on listen; empty when they may."""
        problems: list[str] = []
        if (self.tls_cert_file is None) != (self.tls_private_key_file is None):
            problems.append(
                "--tls-cert-file and --tls-private-key-file go together: give both or neither"
            )
        if self.client_ca_file is not None and not self.tls:
            problems.append("--client-ca-file needs --tls-cert-file and --tls-private-key-file")
        for flag, path in (
            ("--tls-cert-file", self.tls_cert_file),
            ("--tls-private-key-file", self.tls_private_key_file),
            ("--client-ca-file", self.client_ca_file),
        ):
            if path is not None and not path.is_file():
                problems.append(f"{flag} {path}: no such file")
        if not self.token_audiences or not all(self.token_audiences):
            problems.append("--token-audience: give at least one non-empty audience")
        if not self.spiffe_trust_domains:
            problems.append("--spiffe-trust-domain: give at least one trust domain")
        for domain in self.spiffe_trust_domains:
            problem = trust_domain_problem(domain)
            if problem is not None:
                problems.append(f"--spiffe-trust-domain: {problem}")
        if self.trust_forwarded_client_cert and self.mesh_listen is None:
            problems.append(
                "--trust-forwarded-client-cert no longer believes x-forwarded-client-cert "
                "from loopback (kubectl port-forward and every container of the pod arrive "
                "there too): give --mesh-listen unix:PATH, a socket only the mesh sidecar "
                "reaches, the one place the header is believed"
            )
        if self.mesh_listen is not None:
            problems.extend(_socket_problems(self.mesh_listen))
        if self.mode is Authorization.RBAC and not (self.tls or self.mesh_listen):
            problems.append(
                "--authorization=rbac needs a way to tell callers apart: serve TLS "
                "(--tls-cert-file, --tls-private-key-file) or listen for a mesh sidecar "
                "(--mesh-listen unix:PATH)"
            )
        if self.mesh_listen is not None and self.mode is Authorization.NONE and not self.insecure:
            # The socket is local, but the sidecar forwards to it whatever the mesh admits.
            problems.append(
                f"--mesh-listen unix:{self.mesh_listen} is reached from other hosts through the "
                "mesh sidecar, and --authorization=none would let any caller create any "
                "Service: use --authorization=rbac, or --insecure to do it anyway"
            )
        if not is_loopback(listen) and not self.insecure:
            if not self.tls:
                problems.append(
                    f"--listen {listen} is reachable from other hosts, and this server would "
                    "serve it in plaintext: give --tls-cert-file and --tls-private-key-file, "
                    "or --insecure to do it anyway"
                )
            elif self.mode is Authorization.NONE:
                problems.append(
                    f"--listen {listen} is reachable from other hosts, and --authorization=none "
                    "would let any caller create any Service: use --authorization=rbac, or "
                    "--insecure to do it anyway"
                )
        return problems

    def warnings(self, listen: str) -> list[str]:
        """What an operator should hear at start-up about settings that are allowed."""
        warnings: list[str] = []
        if self.trust_forwarded_client_cert:
            warnings.append(
                "--trust-forwarded-client-cert is deprecated and does nothing: "
                "x-forwarded-client-cert is believed on --mesh-listen only; drop the flag"
            )
        if self.mesh_listen is not None and self.mode is Authorization.NONE:
            warnings.append(
                f"--insecure: any caller the mesh sidecar forwards to unix:{self.mesh_listen} "
                "is authorized"
            )
        if is_loopback(listen):
            return warnings
        if not self.tls:
            warnings.append(f"--insecure: serving {listen} in plaintext")
        if self.mode is Authorization.NONE:
            warnings.append(f"--insecure: any caller that reaches {listen} is authorized")
        return warnings


def mesh_socket(text: str) -> Path | None:
    """--mesh-listen's value: unix:/abs/path or unix:///abs/path -> the path; empty: None.

    Raises ValueError for anything else. Abstract sockets (unix-abstract:) are refused: any
    process in the pod's network namespace, every container of the pod, can reach one, which
    is what the socket is there to prevent.
    """
    text = text.strip()
    if not text:
        return None
    if text.startswith("unix-abstract:"):
        raise ValueError(
            f"{text!r}: an abstract socket is reachable by every container of the pod; give "
            "a socket file on a volume that only k8sailor and the sidecar mount (unix:PATH)"
        )
    if not text.startswith("unix:"):
        raise ValueError(
            f"{text!r} is not unix:PATH: the mesh listener is a Unix socket, never a TCP port"
        )
    path = text.removeprefix("unix:")
    if path.startswith("//"):
        path = path[2:]  # unix:///abs/path, gRPC's other spelling
    if not path.startswith("/"):
        raise ValueError(f"{text!r}: the socket's path must be absolute (unix:/dir/name.sock)")
    return Path(path)


def _socket_problems(path: Path) -> list[str]:
    """Why a Unix socket cannot be made at path (found now, not as gRPC's bind failure)."""
    where = f"--mesh-listen unix:{path}"
    if not path.is_absolute():
        return [f"{where}: the socket's path must be absolute"]
    if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
        return [f"{where}: the path is longer than the {MAX_SOCKET_PATH_BYTES} bytes a Unix "
                "socket's path may have"]  # fmt: skip
    if not path.parent.is_dir():
        return [f"{where}: directory {path.parent} does not exist (mount the shared volume)"]
    if path.exists() and not path.is_socket():
        return [f"{where}: {path} exists and is not a socket"]
    return []


def is_loopback(listen: str) -> bool:
    """Whether a host:port listen address is reachable from this host only."""
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name, or "" / "0.0.0.0" style wildcards: assume others can reach it
