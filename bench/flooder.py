"""The flooder of bench/bench_floods.py: a process of its own that sends one-rule requests with
a new random bearer token each (or none), FLOOD_CONCURRENCY at a time, until SIGTERM.

Started by `flooding` as `python -m bench.flooder TARGET --ca FILE --namespace NS --condition C`;
it prints "flooding" once under way, and at the end one JSON line of the status codes seen.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from bench.workload import REPO
from k8sailor.v1 import exposure_pb2 as pb
from k8sailor.v1 import exposure_pb2_grpc as pb_grpc

# What the flooder can do: send no token at all, a new one per request on one connection, or
# TOKENS_PER_CONNECTION on each of many connections ("quiet": no flooder).
CONDITIONS = ("no token", "1 connection", "reconnecting")
FLOOD_CONCURRENCY = 64
TOKENS_PER_CONNECTION = 8  # when reconnecting


async def flood(target: str, ca_pem: bytes, namespace: str, condition: str) -> None:
    """Until SIGTERM: requests with random tokens (or none); then one JSON line of the codes
    seen."""
    credentials = grpc.ssl_channel_credentials(ca_pem)
    reconnect = condition == "reconnecting"
    request = pb.CreateServicesRequest(
        namespace=namespace, deployment="web", rules=[pb.Rule(raw="80:8080")], dry_run=True
    )
    codes: Counter[str] = Counter()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def one(stub: pb_grpc.ExposureServiceStub) -> None:
        metadata: tuple[tuple[str, str], ...] = ()
        if condition != "no token":
            metadata = (("authorization", f"Bearer flood-{uuid.uuid4().hex}"),)
        call: Any = stub.CreateServices(request, metadata=metadata, timeout=10)
        try:
            async for _ in call:
                pass
            codes["OK"] += 1
        except grpc.aio.AioRpcError as error:
            codes[error.code().name] += 1

    async def on_its_own_connections() -> None:
        while True:
            async with grpc.aio.secure_channel(target, credentials) as channel:
                stub = pb_grpc.ExposureServiceStub(channel)
                for _ in range(TOKENS_PER_CONNECTION):
                    await one(stub)

    async def on(stub: pb_grpc.ExposureServiceStub) -> None:
        while True:
            await one(stub)

    async with grpc.aio.secure_channel(target, credentials) as shared:
        stub = pb_grpc.ExposureServiceStub(shared)
        workers = [
            asyncio.create_task(on_its_own_connections() if reconnect else on(stub))
            for _ in range(FLOOD_CONCURRENCY)
        ]
        started = time.monotonic()
        print("flooding", flush=True)
        await stop.wait()
        seconds = time.monotonic() - started
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    print(json.dumps({"codes": codes, "seconds": seconds}), flush=True)


@contextlib.asynccontextmanager
async def flooding(
    condition: str, target: str, ca_file: Path, namespace: str, log: Path
) -> AsyncIterator[dict[str, Any]]:
    """A flooder process for the block (none when quiet); the dict gets its counts after."""
    outcome: dict[str, Any] = {"codes": {}, "seconds": 0.0}
    if condition == "quiet":
        yield outcome
        return
    command = [
        sys.executable, "-m", "bench.flooder", target, "--ca", str(ca_file),
        "--namespace", namespace, "--condition", condition,
    ]  # fmt: skip
    with log.open("ab") as errors:
        process = await asyncio.create_subprocess_exec(
            *command, cwd=REPO, stdout=subprocess.PIPE, stderr=errors
        )
    try:
        assert process.stdout is not None
        await asyncio.wait_for(process.stdout.readline(), 30)  # "flooding"
        await asyncio.sleep(1.0)  # the flood under way before anything is measured
        yield outcome
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(process.communicate(), 30)
        if out.strip():
            outcome.update(json.loads(out.decode().strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench.flooder", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("target")
    parser.add_argument("--ca", required=True, type=Path, help="the server's CA certificate")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--condition", required=True, choices=CONDITIONS)
    args = parser.parse_args(argv)
    asyncio.run(flood(args.target, args.ca.read_bytes(), args.namespace, args.condition))
    return 0


if __name__ == "__main__":
    sys.exit(main())
