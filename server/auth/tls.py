"""TLS server credentials that follow the certificate files as they are rotated.

cert-manager and the kubelet rotate the Secrets mounted into a pod by swapping the files under
it. gRPC's dynamic SSL server credentials ask a fetcher before every new handshake whether the
certificate changed; this one looks at the files' stat (cheap: the handshake path) and reads
them again only when that changed, and hands gRPC the new pair only when it differs from the
one in use and the key matches the certificate. A half-written rotation (new certificate, old
key) is logged and ignored until the files settle, so existing connections and new handshakes
keep working with the old pair. Calls in flight are never touched: only new handshakes see the
new certificate.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

log = logging.getLogger("k8sailor.tls")


class TlsError(ValueError):
    """The certificate files cannot be served; the message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class _Pem:
    certificate_chain: bytes
    private_key: bytes
    client_ca: bytes | None


_Stamp = tuple[tuple[int, int, int], ...]


class ReloadingCertificates:
    """The serving certificate, its key and the client CA, read again when they change."""

    def __init__(self, cert_file: Path, key_file: Path, client_ca_file: Path | None) -> None:
        self._files = (cert_file, key_file, *([client_ca_file] if client_ca_file else []))
        self._cert_file, self._key_file, self._client_ca_file = cert_file, key_file, client_ca_file
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._current = self._read()
        self.reloads = 0

    @property
    def mutual(self) -> bool:
        return self._client_ca_file is not None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            _configuration(self._current),
            # grpc-stubs forgets that the fetcher may answer None (no change).
            self.fetch,  # type: ignore[arg-type]
            require_client_authentication=self.mutual,
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC before each new handshake: a new configuration, or None to keep it."""
        try:
            with self._lock:
                stamp = self._stat()
                if stamp == self._stamp:
                    return None
                self._stamp = stamp
                try:
                    fresh = self._read()
                except TlsError as error:
                    log.warning("certificate files changed but cannot be used yet: %s", error)
                    return None
                if fresh == self._current:
                    return None
                self._current = fresh
                self.reloads += 1
            log.info("serving the new certificate from %s", self._cert_file)
            return _configuration(fresh)
        except Exception:  # an exception here would fail the caller's handshake
            log.exception("checking the certificate files failed; keeping the current ones")
            return None

    def _stat(self) -> _Stamp:
        stamps = []
        for path in self._files:
            try:
                # stat follows the ..data symlink that Secret volumes swap on rotation.
                info = os.stat(path)
            except OSError:
                stamps.append((-1, -1, -1))
                continue
            stamps.append((info.st_ino, info.st_mtime_ns, info.st_size))
        return tuple(stamps)

    def _read(self) -> _Pem:
        chain = _read(self._cert_file, "--tls-cert-file")
        key = _read(self._key_file, "--tls-private-key-file")
        client_ca = (
            _read(self._client_ca_file, "--client-ca-file") if self._client_ca_file else None
        )
        check_pair(chain, key, self._cert_file, self._key_file)
        if client_ca is not None:
            _certificates(client_ca, self._client_ca_file, "--client-ca-file")
        return _Pem(chain, key, client_ca)


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise TlsError(f"{flag} {path}: {error.strerror or error}") from error


def _certificates(pem: bytes, path: Path | None, flag: str) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError as error:
        raise TlsError(f"{flag} {path}: no PEM certificate in it ({error})") from error
    return certificates


def check_pair(chain: bytes, key: bytes, cert_file: Path, key_file: Path) -> None:
    """Refuse a certificate and key that do not belong together (or are not PEM at all)."""
    leaf = _certificates(chain, cert_file, "--tls-cert-file")[0]
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError) as error:
        raise TlsError(
            f"--tls-private-key-file {key_file}: not an unencrypted PEM private key ({error})"
        ) from error
    spki = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        raise TlsError(
            f"--tls-private-key-file {key_file} is not the key of the certificate in "
            f"--tls-cert-file {cert_file}"
        )


def _configuration(pem: _Pem) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(pem.private_key, pem.certificate_chain)], root_certificates=pem.client_ca
    )
