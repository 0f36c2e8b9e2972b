"""The Deployments that requests expose: read each time, or kept up to date by a watch.

Every request needs three things of its Deployment: the uid (for the Services' owner
reference), the matchLabels (their selector) and the named container ports (for named target
ports). Reading the Deployment for every request doubles the API calls of a one-rule request,
so `DeploymentCache` keeps those facts for every Deployment it may be asked about, from one
informer (server.kube.informer: list, watch, relist on 410) per watched namespace, or one for
the whole cluster.

Never wrong for long:
- The cache answers only while its watch is connected. While it lists, reconnects or backs off
  after an error, every request reads its Deployment with a GET, as with `off`.
- A Deployment the cache does not have (created a moment ago, or in a namespace it does not
  watch) is read with a GET; concurrent reads of one Deployment share one GET. The answer is
  not stored: only the watch writes the cache, so a GET that raced a deletion cannot leave a
  stale entry behind.
- A Deployment deleted and created again under the same name: the watch delivers DELETED, then
  ADDED with the new uid. A request that lands between the re-creation and the arrival of
  those events still gets the old uid; that window is the watch's delivery delay (a few
  milliseconds on a local API server, see bench/results/), and it cannot be shorter without a
  read per request, which is what `--deployment-cache=off` does.

The GET for a miss is shared by the requests that miss the same Deployment at that moment, but
only by those it lasts long enough for. A GET runs on the deadline of the request that started
it, so that its retries stop in time to tell that request why it failed (the API server's
reason, not just "no answer in time"); a request whose deadline is later than that (by more
than `_JOIN_SLACK_S`) does not wait for it, since it could fail for the request before its
deadline (the first request's deadline was 1 ms, say), and starts a GET on its own deadline,
which the requests after it then share. Each request waits no longer than its own deadline, and
one going away cancels no GET that others wait for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from server.kube.client import Kube
from server.kube.errors import from_transport
from server.kube.informer import Backoff, Informer, Key, WatchSettings
from server.kube.observers import CacheObserver, NoCacheObserver
from server.manifests import Deployment

__all__ = [
    "Backoff",
    "DeploymentCache",
    "DeploymentReader",
    "DeploymentSource",
    "DirectReads",
    "OwnerReads",
    "WatchSettings",
]

# How much later than a shared GET's deadline a request's may be and still wait for it. Requests
# that arrive together with like deadlines (now + the same budget) differ by the time between
# them, so this keeps them on one GET; one that does fail gives them its reason up to this
# much before their deadline.
_JOIN_SLACK_S = 1.0


class DeploymentSource(Protocol):
    async def get(self, namespace: str, name: str, *, timeout: float | None) -> Deployment:
        """The Deployment's facts. Raises KubeNotFound when there is no such Deployment,
        DeploymentError when it cannot be exposed, and KubeError when the read failed."""
        ...


class DeploymentReader(Protocol):
    """Where a Deployment is read from: server.kube's Kube, or a fake of the cluster."""

    async def read_deployment(
        self, namespace: str, name: str, *, timeout: float | None
    ) -> dict[str, Any]:
        """The Deployment as the API server has it (camelCase JSON)."""
        ...


class DirectReads:
    """A GET for every request (`--deployment-cache=off`)."""

    def __init__(self, kube: DeploymentReader) -> None:
        self._kube = kube

    async def get(self, namespace: str, name: str, *, timeout: float | None) -> Deployment:
        return Deployment.from_manifest(
            await self._kube.read_deployment(namespace, name, timeout=timeout)
        )


class OwnerReads:
    """A GET of the Deployment as an owner: its name and uid, whatever its selector says
    (listing or deleting what a Deployment owns must work even for one whose selector no
    Service could express); the selector and ports are left empty."""

    def __init__(self, kube: DeploymentReader) -> None:
        self._kube = kube

    async def get(self, namespace: str, name: str, *, timeout: float | None) -> Deployment:
        raw = await self._kube.read_deployment(namespace, name, timeout=timeout)
        meta = raw.get("metadata") or {}
        return Deployment(str(meta.get("name", name)), namespace, str(meta.get("uid", "")), {})


@dataclass(frozen=True, slots=True)
class _SharedRead:
    """A GET in flight that requests missing its Deployment wait for, and the deadline it runs
    on (loop.time(); None for none)."""

    task: asyncio.Task[Deployment]
    deadline: float | None

    def lasts_for(self, deadline: float | None) -> bool:
        """Whether it runs (nearly) as long as a request with this deadline may wait."""
        if self.deadline is None:
            return True
        return deadline is not None and deadline <= self.deadline + _JOIN_SLACK_S


class DeploymentCache:
    """Deployments from a watch over the whole cluster, or over `namespaces` only; observer
    (metrics, when app.py gives one) is told of each hit, miss and relist.

    start() begins watching in the background and returns at once: until the first list is
    in, requests read their Deployments directly. stop() ends the watches.
    """

    def __init__(
        self,
        kube: Kube,
        namespaces: Iterable[str] = (),
        settings: WatchSettings | None = None,
        *,
        observer: CacheObserver | None = None,
    ) -> None:
        self._direct = DirectReads(kube)
        chosen = settings or WatchSettings()
        self._observer: CacheObserver = observer or NoCacheObserver()
        scopes: list[str | None] = list(dict.fromkeys(namespaces)) or [None]
        self._informers = {scope: Informer(kube, scope, chosen, self._observer) for scope in scopes}
        self._everywhere = self._informers.get(None)
        self._reads: dict[Key, _SharedRead] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.hits = 0
        self.misses = 0

    async def start(self) -> None:
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(informer.run(), name=f"deployment-watch-{scope or 'all'}")
            for scope, informer in self._informers.items()
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for informer in self._informers.values():
            informer.synced = False

    async def wait_synced(self) -> None:
        """Until every watch has listed and connected once (tests and benchmarks use this)."""
        await asyncio.gather(*(r.synced_once.wait() for r in self._informers.values()))

    @property
    def synced(self) -> bool:
        return all(informer.synced for informer in self._informers.values())

    @property
    def size(self) -> int:
        return sum(len(informer.entries) for informer in self._informers.values())

    @property
    def oversized(self) -> int:
        """How many Deployments are over the bounds of what the cache keeps, and so read with
        a GET for every request."""
        return sum(len(informer.oversized) for informer in self._informers.values())

    @property
    def lists(self) -> int:
        return sum(informer.lists for informer in self._informers.values())

    def peek(self, namespace: str, name: str) -> Deployment | None:
        """What the cache would answer now without reading, or None."""
        informer = self._everywhere or self._informers.get(namespace)
        if informer is None or not informer.synced:
            return None
        return informer.entries.get((namespace, name))

    async def get(self, namespace: str, name: str, *, timeout: float | None) -> Deployment:
        found = self.peek(namespace, name)
        if found is not None:
            self.hits += 1
            self._observer.cache_hit()
            return found
        self.misses += 1
        self._observer.cache_missed()
        return await self._read(namespace, name, timeout)

    async def _read(self, namespace: str, name: str, timeout: float | None) -> Deployment:
        """One GET for all who miss the same Deployment at the same time with like deadlines."""
        key = (namespace, name)
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        shared = self._reads.get(key)
        if shared is None or not shared.lasts_for(deadline):
            task = asyncio.create_task(self._direct.get(namespace, name, timeout=timeout))
            shared = _SharedRead(task, deadline)
            # The newest: those who come next share it. An older one still answers its own.
            self._reads[key] = shared
            task.add_done_callback(lambda done: self._forget(key, done))
        try:
            # Shielded: one caller going away must not cancel the read the others wait for;
            # each still waits no longer than its own deadline.
            async with asyncio.timeout(timeout):
                return await asyncio.shield(shared.task)
        except TimeoutError as error:
            raise from_transport(error) from error

    def _forget(self, key: Key, done: asyncio.Task[Deployment]) -> None:
        shared = self._reads.get(key)
        if shared is not None and shared.task is done:
            del self._reads[key]
        if not done.cancelled():
            done.exception()  # retrieved here, so a read that nobody awaits any more is quiet
