"""Command-line options every `k8sailor` command shares: where the server is, how to reach it
(TLS, a client certificate, a token file), the namespace, --json and --timeout."""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from client.connection import Client, connect

_TLS_FLAGS = (
    ("--ca-file", "CA_FILE", "PEM CA bundle that signed the server's certificate (TLS)"),
    ("--cert-file", "CERT_FILE", "PEM client certificate, for mutual TLS"),
    ("--key-file", "KEY_FILE", "PEM private key of --cert-file"),
    ("--token-file", "TOKEN_FILE", "file with a bearer token, read for each call (TLS)"),
)


def common_options() -> argparse.ArgumentParser:
    """A parent parser with the options of every command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-n", "--namespace", default="", help='default: "default"')
    common.add_argument(
        "--server",
        default=os.environ.get("K8SAILOR_SERVER", "127.0.0.1:50051"),
        help="host:port of k8sailor-server (default $K8SAILOR_SERVER or 127.0.0.1:50051)",
    )
    for flag, env, meaning in _TLS_FLAGS:
        common.add_argument(
            flag,
            default=os.environ.get(f"K8SAILOR_{env}") or None,
            metavar="FILE",
            help=f"{meaning}; default $K8SAILOR_{env}",
        )
    common.add_argument("--json", action="store_true", help="one JSON object per line")
    common.add_argument(
        "--timeout", type=float, default=30.0, help="deadline in seconds (default 30)"
    )
    return common


def _read(path: str | None, flag: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise OSError(f"{flag} {path}: {error.strerror or error}") from error


@asynccontextmanager
async def connect_from(args: argparse.Namespace) -> AsyncIterator[Client]:
    """A client as the options say. OSError for a file that cannot be read, ValueError for
    TLS options that do not fit together."""
    root_certificates = _read(args.ca_file, "--ca-file")
    certificate_chain = _read(args.cert_file, "--cert-file")
    private_key = _read(args.key_file, "--key-file")
    async with connect(
        args.server,
        root_certificates=root_certificates,
        certificate_chain=certificate_chain,
        private_key=private_key,
        token_file=args.token_file,
    ) as client:
        yield client
