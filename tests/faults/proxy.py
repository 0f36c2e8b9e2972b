"""A TCP proxy in front of the API server that can slow down or stall what passes through.

TLS passes through untouched (the API server's certificate names 127.0.0.1, whatever the
port), so k8sailor talks to the real API server, only later or not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

_CHUNK = 64 * 1024


class FaultyProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        # Seconds added before each chunk is passed on, both ways.
        self.latency = 0.0
        # While set, connections opened from then on pass nothing through, either way: the
        # handshake and every request on them hang, as behind a silent API server.
        self.stall_new = False
        self._released = asyncio.Event()
        self.connections = 0

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    def release(self) -> None:
        """Stalled connections pass data again; new ones are not stalled."""
        self.stall_new = False
        self._released.set()

    async def close(self) -> None:
        self.release()
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        stalled = self.stall_new
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            pump = asyncio.create_task(self._pump(source, sink, stalled))
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, stalled: bool
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while chunk := await source.read(_CHUNK):
                if stalled:
                    await self._released.wait()
                if self.latency:
                    await asyncio.sleep(self.latency)
                sink.write(chunk)
                await sink.drain()
        sink.close()


@asynccontextmanager
async def faulty_proxy(server: str) -> AsyncIterator[FaultyProxy]:
    """A FaultyProxy in front of server ("https://127.0.0.1:6443")."""
    host, _, port = server.removeprefix("https://").rstrip("/").rpartition(":")
    proxy = FaultyProxy(host, int(port))
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
