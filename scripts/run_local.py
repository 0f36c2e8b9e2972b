"""`make run`: a cluster, a demo Deployment, and k8sailor-server in the foreground.

The cluster is the one $KUBECONFIG names when it is set; otherwise the local control plane
(started in the background under .cluster/, left running for the next `make run`; stop it with
`make cluster-down`). ~/.kube/config alone is deliberately not used: a demo should not create
Deployments in whatever real cluster a newcomer's default context points at.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
from pathlib import Path

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from tests import objects
from tests.controlplane import ControlPlaneError
from tests.controlplane.__main__ import DEFAULT_DIR, ensure_running

DEMO = "demo"
TRY_RULES = ["80:8088", "#80:80", "!31234:80:8088", "@www.example.com"]
BIN = Path(sys.executable).parent


def _kubeconfig() -> str:
    configured = os.environ.get("KUBECONFIG")
    if configured:
        print(f"# using the cluster of KUBECONFIG={configured}", file=sys.stderr)
        return configured
    plane = ensure_running(DEFAULT_DIR)
    print(f"export KUBECONFIG={plane.kubeconfig}")
    return str(plane.kubeconfig)


async def _create_demo_deployment(kubeconfig: str) -> None:
    api = await config.new_client_from_config(config_file=kubeconfig)
    async with api:
        apps = client.AppsV1Api(api)
        body = objects.deployment(DEMO, {"app": DEMO}, [("http", 8088, "TCP")])
        try:
            await apps.create_namespaced_deployment("default", body)
            print(f'# created Deployment "{DEMO}" in namespace "default"', file=sys.stderr)
        except ApiException as error:
            if error.status != 409:
                raise
            print(f'# Deployment "{DEMO}" already exists in "default"', file=sys.stderr)


def main() -> int:
    try:
        kubeconfig = _kubeconfig()
    except ControlPlaneError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    asyncio.run(_create_demo_deployment(kubeconfig))
    listen = os.environ.get("K8SAILOR_LISTEN", "127.0.0.1:50051")
    try_line = shlex.join([str(BIN / "k8sailor"), "expose", DEMO, *TRY_RULES])
    print(
        f"\nk8sailor-server is starting on {listen}. In another terminal, try:\n\n"
        f"    {try_line}\n\n"
        "Ctrl-C stops the server; `make cluster-down` stops the local control plane.\n",
        file=sys.stderr,
        flush=True,
    )
    server = str(BIN / "k8sailor-server")
    os.execv(server, [server, "--kubeconfig", kubeconfig, "--listen", listen])
    return 0  # not reached: execv replaces this process


if __name__ == "__main__":
    sys.exit(main())
