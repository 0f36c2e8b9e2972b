"""`k8sailor expose DEPLOYMENT RULE... [-n NAMESPACE] [--dry-run] [--server ADDR] [--json]`.

Prints a row per rule as its result arrives (or one JSON object per line with --json).
Exit status: 0 when every rule was created or already there, 1 when any rule was not,
2 when the request as a whole failed (no such Deployment, server unreachable, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import TextIO

from client.connection import RequestFailed, Result, connect

_COLUMNS = (("INDEX", 5), ("OUTCOME", 9), ("SERVICE", 24), ("CLUSTER-IP", 15), ("PORTS", 28))


def _row(cells: list[str]) -> str:
    padded = [cell.ljust(width) for cell, (_, width) in zip(cells, _COLUMNS, strict=False)]
    return "  ".join(padded + cells[len(_COLUMNS) :]).rstrip()


def format_header() -> str:
    return _row([name for name, _ in _COLUMNS] + ["ERROR"])


def format_row(result: Result) -> str:
    ports = ",".join(str(port) for port in result.ports) or "-"
    return _row(
        [
            str(result.index),
            result.outcome.name,
            result.service_name or "-",
            result.cluster_ip or "-",
            ports,
            result.error,
        ]
    )


def format_json(result: Result) -> str:
    return json.dumps(
        {
            "index": result.index,
            "rule": result.rule,
            "outcome": result.outcome.name,
            "service": result.service_name,
            "cluster_ip": result.cluster_ip,
            "ports": [
                {
                    "name": port.name,
                    "port": port.port,
                    "target_port": port.target_port,
                    "node_port": port.node_port,
                    "protocol": port.protocol,
                    "app_protocol": port.app_protocol,
                }
                for port in result.ports
            ],
            "error": result.error,
            "reason": result.reason,
        }
    )


async def expose(args: argparse.Namespace, out: TextIO) -> int:
    failed = printed = 0
    try:
        root_certificates = _read(args.ca_file, "--ca-file")
        certificate_chain = _read(args.cert_file, "--cert-file")
        private_key = _read(args.key_file, "--key-file")
    except OSError as error:
        print(f"k8sailor: {error}", file=sys.stderr)
        return 2
    try:
        async with connect(
            args.server,
            root_certificates=root_certificates,
            certificate_chain=certificate_chain,
            private_key=private_key,
            token_file=args.token_file,
        ) as client:
            async for result in client.create_services(
                args.deployment,
                args.rules,
                namespace=args.namespace,
                dry_run=args.dry_run,
                timeout=args.timeout,
            ):
                if not args.json and printed == 0:
                    print(format_header(), file=out, flush=True)
                printed += 1
                failed += not result.ok
                print(
                    format_json(result) if args.json else format_row(result), file=out, flush=True
                )
    except RequestFailed as error:
        print(f"k8sailor: {error.code.name}: {error.details}", file=sys.stderr)
        return 2
    except ValueError as error:  # TLS options that do not fit together
        print(f"k8sailor: {error}", file=sys.stderr)
        return 2
    return 1 if failed else 0


def _read(path: str | None, flag: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise OSError(f"{flag} {path}: {error.strerror or error}") from error


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="k8sailor", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    expose_parser = commands.add_parser(
        "expose",
        help="create one Service per rule in front of a Deployment",
        description="Rules: 80:8088, #80:80 (headless), !31234:80:8088 (NodePort), "
        "^80:8080 (LoadBalancer), @db.example.com (ExternalName), name=RULE; see docs/rules.md.",
    )
    expose_parser.add_argument("deployment")
    expose_parser.add_argument("rules", nargs="+", metavar="RULE")
    expose_parser.add_argument("-n", "--namespace", default="", help='default: "default"')
    expose_parser.add_argument("--dry-run", action="store_true", help="validate, create nothing")
    expose_parser.add_argument(
        "--server",
        default=os.environ.get("K8SAILOR_SERVER", "127.0.0.1:50051"),
        help="host:port of k8sailor-server (default $K8SAILOR_SERVER or 127.0.0.1:50051)",
    )
    for flag, env, meaning in (
        ("--ca-file", "CA_FILE", "PEM CA bundle that signed the server's certificate (TLS)"),
        ("--cert-file", "CERT_FILE", "PEM client certificate, for mutual TLS"),
        ("--key-file", "KEY_FILE", "PEM private key of --cert-file"),
        ("--token-file", "TOKEN_FILE", "file with a bearer token, read for each call (TLS)"),
    ):
        expose_parser.add_argument(
            flag,
            default=os.environ.get(f"K8SAILOR_{env}") or None,
            metavar="FILE",
            help=f"{meaning}; default $K8SAILOR_{env}",
        )
    expose_parser.add_argument("--json", action="store_true", help="one JSON object per line")
    expose_parser.add_argument(
        "--timeout", type=float, default=30.0, help="deadline in seconds (default 30)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(expose(args, sys.stdout))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
