"""Transport and access settings, and the rules for which combinations are safe to run.

The defaults keep `make run` as it was (loopback, plaintext, no authorization), and everything
that would expose the port to others without TLS or without authorization has to be asked for
by name with --insecure.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TOKEN_AUDIENCE = "k8sailor"


class Authorization(enum.StrEnum):
    RBAC = "rbac"  # SubjectAccessReviews against the cluster's RBAC
    NONE = "none"  # anyone who reaches the port may do anything k8sailor may


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """What --tls-cert-file, --client-ca-file, --authorization and friends say.

    authorization None means the default: rbac when TLS is on, none otherwise.
    """

    tls_cert_file: Path | None = None
    tls_private_key_file: Path | None = None
    client_ca_file: Path | None = None
    insecure: bool = False
    token_audiences: tuple[str, ...] = (DEFAULT_TOKEN_AUDIENCE,)
    authorization: Authorization | None = None
    trust_forwarded_client_cert: bool = False
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
        return Authorization.RBAC if self.tls else Authorization.NONE

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
        if self.mode is Authorization.RBAC and not (self.tls or self.trust_forwarded_client_cert):
            problems.append(
                "--authorization=rbac needs a way to tell callers apart: serve TLS "
                "(--tls-cert-file, --tls-private-key-file) or trust a mesh sidecar "
                "(--trust-forwarded-client-cert)"
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
        if is_loopback(listen):
            return []
        warnings: list[str] = []
        if not self.tls:
            warnings.append(f"--insecure: serving {listen} in plaintext")
        if self.mode is Authorization.NONE:
            warnings.append(f"--insecure: any caller that reaches {listen} is authorized")
        return warnings


def is_loopback(listen: str) -> bool:
    """Whether a host:port listen address is reachable from this host only."""
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name, or "" / "0.0.0.0" style wildcards: assume others can reach it
