"""`k8sailor-server`: serve ExposureService until SIGTERM or SIGINT, then drain and exit 0."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from kubernetes_asyncio.config import ConfigException

from server.app import ServerConfig, serve_until_signalled
from server.exposer import Settings
from server.kube import load_api_client
from server.rules import NodePortRange


def _env(name: str, default: str) -> str:
    return os.environ.get(f"K8SAILOR_{name}", default)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def _node_ports(text: str) -> NodePortRange:
    try:
        return NodePortRange.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="k8sailor-server",
        description="Expose Kubernetes Deployments through Services, over gRPC. "
        "Every flag can also be set as K8SAILOR_<FLAG> in the environment.",
    )
    parser.add_argument("--listen", default=_env("LISTEN", "127.0.0.1:50051"), help="host:port")
    parser.add_argument(
        "--kubeconfig",
        default=_env("KUBECONFIG", "") or None,
        help="kubeconfig file (default: $KUBECONFIG, in-cluster, then ~/.kube/config)",
    )
    parser.add_argument("--context", default=_env("CONTEXT", "") or None, help="kubeconfig context")
    parser.add_argument(
        "--max-concurrency",
        type=_positive,
        default=_positive(_env("MAX_CONCURRENCY", "32")),
        help="API calls in flight at once, across all requests (default 32)",
    )
    parser.add_argument(
        "--max-rules",
        type=_positive,
        default=_positive(_env("MAX_RULES", "256")),
        help="rules accepted in one request (default 256)",
    )
    parser.add_argument(
        "--node-port-range",
        type=_node_ports,
        default=_node_ports(_env("NODE_PORT_RANGE", "30000-32767")),
        help="the cluster's --service-node-port-range (default 30000-32767)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=float(_env("GRACE", "10")),
        help="seconds in-flight requests get to finish on SIGTERM (default 10)",
    )
    parser.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"))
    return parser.parse_args(argv)


async def _main(args: argparse.Namespace) -> int:
    try:
        api = await load_api_client(args.kubeconfig, args.context, pool_size=args.max_concurrency)
    except (ConfigException, OSError) as error:
        logging.getLogger("k8sailor.server").error(
            "no usable cluster configuration: %s (set --kubeconfig or KUBECONFIG)", error
        )
        return 2
    config = ServerConfig(
        listen=args.listen,
        max_in_flight=args.max_concurrency,
        settings=Settings(max_rules=args.max_rules, node_ports=args.node_port_range),
    )
    async with api:
        await serve_until_signalled(api, config, args.grace)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
