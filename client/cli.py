"""`k8sailor expose DEPLOYMENT RULE... [-n NAMESPACE] [--dry-run] [--server ADDR] [--json]`;
`k8sailor get|delete|apply` manage what it made (see client.lifecycle_cli).

Prints a row per rule as its result arrives (or one JSON object per line with --json).
Exit status: 0 when every rule was created or already there, 1 when any rule was not,
2 when the request as a whole failed (no such Deployment, server unreachable, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TextIO

from client import lifecycle_cli
from client.connection import Outcome, RequestFailed, Result
from client.options import common_options, connect_from
from client.text import printable

_COLUMNS = (("INDEX", 5), ("OUTCOME", 9), ("SERVICE", 24), ("CLUSTER-IP", 15), ("PORTS", 28))


def _row(cells: list[str]) -> str:
    padded = [cell.ljust(width) for cell, (_, width) in zip(cells, _COLUMNS, strict=False)]
    return "  ".join(padded + cells[len(_COLUMNS) :]).rstrip()


def format_header() -> str:
    return _row([name for name, _ in _COLUMNS] + ["ERROR"])


def outcome_name(result: Result) -> str:
    """The outcome's name, and for one newer than this client, its number too."""
    if result.outcome is Outcome.UNKNOWN:
        return f"UNKNOWN({result.outcome_number})"
    return result.outcome.name


def format_row(result: Result) -> str:
    ports = ",".join(str(port) for port in result.ports) or "-"
    return _row(
        [
            str(result.index),
            outcome_name(result),
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
            "outcome": outcome_name(result),
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
    reported: set[int] = set()
    try:
        async with connect_from(args) as client:
            async for result in client.create_services(
                args.deployment,
                args.rules,
                namespace=args.namespace,
                dry_run=args.dry_run,
                timeout=args.timeout,
            ):
                if not args.json and printed == 0:
                    print(printable(format_header()), file=out, flush=True)
                printed += 1
                failed += not result.ok
                reported.add(result.index)
                line = format_json(result) if args.json else format_row(result)
                print(printable(line), file=out, flush=True)
    except RequestFailed as error:
        print(printable(f"k8sailor: {error.code.name}: {error.details}"), file=sys.stderr)
        return 2
    except (OSError, ValueError) as error:  # an unreadable file, TLS options that do not fit
        print(printable(f"k8sailor: {error}"), file=sys.stderr)
        return 2
    # The server promises exactly one result per rule: a rule it did not report is not known
    # to exist, and one reported twice (or an index out of range) is a result to distrust.
    expected = len(args.rules)
    if printed != expected or reported != set(range(expected)):
        print(
            f"k8sailor: the server reported {len(reported & set(range(expected)))} of "
            f"{expected} rules in {printed} results",
            file=sys.stderr,
        )
        return 1
    return 1 if failed else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="k8sailor", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    common = common_options()
    expose_parser = commands.add_parser(
        "expose",
        parents=[common],
        help="create one Service per rule in front of a Deployment",
        description="Rules: 80:8088, #80:80 (headless), !31234:80:8088 (NodePort), "
        "^80:8080 (LoadBalancer), @db.example.com (ExternalName), name=RULE; see docs/rules.md.",
    )
    expose_parser.add_argument("deployment")
    expose_parser.add_argument("rules", nargs="+", metavar="RULE")
    expose_parser.add_argument("--dry-run", action="store_true", help="validate, create nothing")
    lifecycle_cli.add_commands(commands, common)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "expose":
            return asyncio.run(expose(args, sys.stdout))
        return asyncio.run(lifecycle_cli.run(args, sys.stdout))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
