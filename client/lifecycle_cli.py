"""`k8sailor get|delete|apply`: the CLI commands that manage what `expose` made.

get DEPLOYMENT                         the Services it owns, with the rules they came from
delete DEPLOYMENT (NAME... | --all)    delete owned Services (never anyone else's)
apply DEPLOYMENT RULE...               make the Services what the rules say; shows what changed
                                       as a diff; --prune deletes the ones no rule names

Every command takes --json (one JSON object per line). Exit status: 0 when everything was
done, 1 when some Service or rule was not, 2 when the request as a whole failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TextIO

from client.connection import (
    Change,
    Client,
    Deleted,
    ExposedService,
    RequestFailed,
    Result,
)
from client.options import connect_from
from client.text import printable

Command = Callable[[Client, argparse.Namespace, TextIO], Coroutine[Any, Any, int]]


def _port_json(result: Result | ExposedService) -> list[dict[str, Any]]:
    return [
        {
            "name": port.name,
            "port": port.port,
            "target_port": port.target_port,
            "node_port": port.node_port,
            "protocol": port.protocol,
            "app_protocol": port.app_protocol,
        }
        for port in result.ports
    ]


def _table(rows: list[list[str]]) -> list[str]:
    """Columns as wide as their widest cell; the last column is not padded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  ".join([cell.ljust(width) for cell, width in zip(row, widths, strict=False)] + row[-1:])
        .rstrip()
        for row in rows
    ]  # fmt: skip


# ----------------------------------------------------------------------------------- get


def format_services(services: list[ExposedService]) -> list[str]:
    rows = [["NAME", "TYPE", "CLUSTER-IP", "PORTS", "RULE"]]
    for service in services:
        ports = ",".join(str(port) for port in service.ports) or "-"
        rows.append([service.name, service.type, service.cluster_ip or "-", ports, service.rule])
    return _table(rows)


def service_json(service: ExposedService) -> str:
    return json.dumps(
        {
            "name": service.name,
            "type": service.type,
            "rule": service.rule,
            "cluster_ip": service.cluster_ip,
            "ports": _port_json(service),
        }
    )


async def get(k8sailor: Client, args: argparse.Namespace, out: TextIO) -> int:
    services = await k8sailor.list_services(
        args.deployment, namespace=args.namespace, timeout=args.timeout
    )
    if args.json:
        for service in services:
            print(printable(service_json(service)), file=out)
    elif services:
        print(printable("\n".join(format_services(services))), file=out)
    else:
        print(printable(f"no Services of Deployment {args.deployment!r}"), file=sys.stderr)
    return 0


# -------------------------------------------------------------------------------- delete


def deleted_json(result: Deleted) -> str:
    return json.dumps(
        {
            "service": result.service_name,
            "outcome": result.outcome.name,
            "error": result.error,
            "reason": result.reason,
        }
    )


def format_deleted(result: Deleted, dry_run: bool) -> str:
    outcome = result.outcome.name.lower().replace("_", " ")
    if result.ok and dry_run:
        outcome = "deleted (dry run)"
    line = f"{outcome:<18} {result.service_name}"
    return f"{line}  {result.error}" if result.error else line


async def delete(k8sailor: Client, args: argparse.Namespace, out: TextIO) -> int:
    failed = 0
    async for result in k8sailor.delete_services(
        args.deployment,
        args.names,
        all=args.all,
        namespace=args.namespace,
        dry_run=args.dry_run,
        timeout=args.timeout,
    ):
        failed += not result.ok
        line = deleted_json(result) if args.json else format_deleted(result, args.dry_run)
        print(printable(line), file=out, flush=True)
    return 1 if failed else 0


# --------------------------------------------------------------------------------- apply


def apply_json(result: Result) -> str:
    return json.dumps(
        {
            "index": result.index,
            "rule": result.rule,
            "outcome": result.outcome.name,
            "service": result.service_name,
            "cluster_ip": result.cluster_ip,
            "ports": _port_json(result),
            "changes": [
                {"path": c.path, "before": c.before, "after": c.after} for c in result.changes
            ],
            "error": result.error,
            "reason": result.reason,
        }
    )


def format_diff(changes: tuple[Change, ...]) -> list[str]:
    """Each change as kubectl diff shows it: the old line with -, the new one with +."""
    lines = []
    for change in changes:
        if change.before:
            lines.append(f"  - {change.path}: {change.before}")
        if change.after:
            lines.append(f"  + {change.path}: {change.after}")
    return lines


def format_applied(result: Result, dry_run: bool) -> list[str]:
    outcome = result.outcome.name.lower().replace("_", " ")
    if dry_run and result.ok and result.outcome.name != "UNCHANGED":
        outcome += " (dry run)"
    where = "pruned" if result.index < 0 else f"rule {result.index}"
    head = f"{outcome:<20} {result.service_name or '-'}  ({where}: {result.rule})"
    if result.error:
        head += f"\n  ! {result.error}"
    return [head, *format_diff(result.changes)]


async def apply(k8sailor: Client, args: argparse.Namespace, out: TextIO) -> int:
    failed = 0
    async for result in k8sailor.apply_services(
        args.deployment,
        args.rules,
        namespace=args.namespace,
        prune=args.prune,
        force=args.force,
        dry_run=args.dry_run,
        timeout=args.timeout,
    ):
        failed += not result.ok
        lines = [apply_json(result)] if args.json else format_applied(result, args.dry_run)
        print(printable("\n".join(lines)), file=out, flush=True)
    return 1 if failed else 0


# ------------------------------------------------------------------------------ wiring


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    """The get, delete and apply subcommands; common holds --server, -n, --json, --timeout."""
    get_parser = commands.add_parser(
        "get", parents=[common], help="list the Services a Deployment owns and their rules"
    )
    get_parser.add_argument("deployment")
    get_parser.set_defaults(run=get)

    delete_parser = commands.add_parser(
        "delete",
        parents=[common],
        help="delete Services a Deployment owns, by name or --all",
        description="Only Services that k8sailor made for this Deployment are ever deleted.",
    )
    delete_parser.add_argument("deployment")
    delete_parser.add_argument("names", nargs="*", metavar="NAME")
    delete_parser.add_argument("--all", action="store_true", help="every Service it owns")
    delete_parser.add_argument("--dry-run", action="store_true", help="check, delete nothing")
    delete_parser.set_defaults(run=delete)

    apply_parser = commands.add_parser(
        "apply",
        parents=[common],
        help="make a Deployment's Services what the rules say (server-side apply)",
        description="Creates what is missing, changes what differs and shows the changes as a "
        "diff; with --prune also deletes the Services of this Deployment that no rule names.",
    )
    apply_parser.add_argument("deployment")
    apply_parser.add_argument("rules", nargs="+", metavar="RULE")
    apply_parser.add_argument(
        "--prune", action="store_true", help="delete owned Services that no rule names"
    )
    apply_parser.add_argument(
        "--force",
        action="store_true",
        help="take over fields another field manager owns (kubectl apply --force-conflicts)",
    )
    apply_parser.add_argument("--dry-run", action="store_true", help="show, change nothing")
    apply_parser.set_defaults(run=apply)


async def run(args: argparse.Namespace, out: TextIO) -> int:
    command: Command = args.run
    if args.command == "delete" and args.all and args.names:
        print(printable("k8sailor: give either NAME... or --all, not both"), file=sys.stderr)
        return 2
    if args.command == "delete" and not args.all and not args.names:
        print(printable("k8sailor: nothing to delete: give NAME... or --all"), file=sys.stderr)
        return 2
    try:
        async with connect_from(args) as k8sailor:
            return await command(k8sailor, args, out)
    except RequestFailed as error:
        print(printable(f"k8sailor: {error.code.name}: {error.details}"), file=sys.stderr)
        return 2
    except (OSError, ValueError) as error:  # an unreadable file, TLS options that do not fit
        print(printable(f"k8sailor: {error}"), file=sys.stderr)
        return 2
