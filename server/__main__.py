"""`k8sailor-server`: serve ExposureService until SIGTERM or SIGINT, then drain and exit 0.

Exit status 2, with one line on stderr and never a traceback, when the configuration is wrong
(a flag, a K8SAILOR_* value, the kubeconfig, a busy port); 1 when a second signal cut the drain
short.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from server.app import ListenError, serve_until_signalled
from server.config import ConfigError, ServerConfig, fail, load
from server.kube import load_api_client

log = logging.getLogger("k8sailor.server")


async def _main(config: ServerConfig) -> int:
    try:
        api = await load_api_client(
            config.kubeconfig, config.context, pool_size=config.max_in_flight
        )
    # kubernetes_asyncio raises ConfigException, OSError, yaml errors or plain ValueErrors and
    # TypeErrors for a kubeconfig it cannot use, depending on where in the file the problem is.
    except Exception as error:
        fail(f"no usable cluster configuration: {error} (set --kubeconfig or KUBECONFIG)")
    async with api:
        try:
            return await serve_until_signalled(api, config)
        except ListenError as error:
            fail(str(error))


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = load(argv)
    except ConfigError as error:
        fail(str(error))
    logging.basicConfig(
        level=config.logging_level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    return asyncio.run(_main(config))


if __name__ == "__main__":
    sys.exit(main())
