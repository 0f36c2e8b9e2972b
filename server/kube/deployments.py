"""The Deployments that requests expose: read each time, or kept up to date by a watch.

Every request needs three things of its Deployment: the uid (for the Services' owner
reference), the matchLabels (their selector) and the named container ports (for named target
ports). Reading the Deployment for every request doubles the API calls of a one-rule request,
so `DeploymentCache` keeps those facts for every Deployment it may be asked about, the way
client-go's SharedInformer does: list, then watch from the list's resourceVersion (with
bookmarks, so a quiet watch can still resume), list again when the API server says 410 Gone,
and start over with a growing pause after errors.

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

Only the facts a request needs are kept (server.manifests.Deployment), not the objects, and
of those only what is bounded: the Deployments come from anyone who may create one in a watched
namespace, and an object of the API server's 1.5 MiB can hold tens of thousands of container
ports or labels. The cache keeps a Deployment's named container ports (unnamed ones resolve no
target port) and its selector only up to `WatchSettings.max_named_ports` and
`max_selector_labels`; a Deployment with more is not kept (its key is remembered as oversized),
so every request for it reads it with a GET and gets exactly what `off` would give it.

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
import contextlib
import logging
import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from server.kube.client import Kube
from server.kube.errors import KubeError, from_transport
from server.kube.observers import CacheObserver, NoCacheObserver
from server.manifests import Deployment, DeploymentError

__all__ = [
    "Backoff",
    "DeploymentCache",
    "DeploymentSource",
    "DirectReads",
]

log = logging.getLogger("k8sailor.deployments")

Key = tuple[str, str]  # (namespace, name)

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


class DirectReads:
    """A GET for every request (`--deployment-cache=off`)."""

    def __init__(self, kube: Kube) -> None:
        self._kube = kube

    async def get(self, namespace: str, name: str, *, timeout: float | None) -> Deployment:
        return Deployment.from_manifest(
            await self._kube.read_deployment(namespace, name, timeout=timeout)
        )


@dataclass(frozen=True, slots=True)
class Backoff:
    """Pauses between attempts after errors: first, doubling up to most, with +-20% jitter so
    that many servers restarted together do not relist in step."""

    first: float = 0.5
    most: float = 30.0

    def pauses(self) -> Iterator[float]:
        pause = self.first
        while True:
            yield pause * random.uniform(0.8, 1.2)
            pause = min(pause * 2, self.most)


@dataclass(frozen=True, slots=True)
class WatchSettings:
    # Deployments per list page. Not client-go's 500: a page is read and decoded whole, a
    # Deployment may be 1.5 MiB of JSON (some 10 MiB with what decoding it takes, if it is all
    # container ports), and whoever may create Deployments decides how big they are, so a page
    # of 500 could need gigabytes. 5 keeps a page near 50 MiB however big its Deployments; a
    # list of 10,000 small ones takes 2,000 calls (about 2 s on a local API server), while
    # requests use GETs.
    page_size: int = 5
    # The API server ends a watch after this long (jittered per watch, as client-go does, so
    # that the watches of many servers do not all end together); it is then resumed.
    watch_seconds: int = 300
    list_timeout: float = 60.0
    backoff: Backoff = Backoff()
    # Bounds on what one cached Deployment may hold (see the module's docstring). Real
    # Deployments have a handful of each; one over a bound is read with a GET instead.
    max_named_ports: int = 128
    max_selector_labels: int = 32


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


class _Gone(Exception):
    """410: the resourceVersion to resume from is too old; list again."""


class _Reflector:
    """One list-and-watch loop, over one namespace or (namespace None) the whole cluster, and
    the Deployments it has seen. Answers only while `synced`."""

    def __init__(
        self,
        kube: Kube,
        namespace: str | None,
        settings: WatchSettings,
        observer: CacheObserver,
    ) -> None:
        self._kube = kube
        self._observer = observer
        self.namespace = namespace
        self._settings = settings
        self.entries: dict[Key, Deployment] = {}
        # Deployments over a bound: not kept, so a GET reads them for every request.
        self.oversized: set[Key] = set()
        self.synced = False
        self.lists = 0  # how many times it listed: 1 plus relists
        self.synced_once = asyncio.Event()
        self._scope = f"namespace {namespace!r}" if namespace else "all namespaces"

    async def run(self) -> None:
        pauses = iter(self._settings.backoff.pauses())
        while True:
            try:
                version = await self._list()
                pauses = iter(self._settings.backoff.pauses())
                while True:
                    version = await self._watch(version)
            except _Gone:
                self.synced = False
                log.info("Deployment watch on %s expired (410 Gone): listing again", self._scope)
            except KubeError as error:
                self.synced = False
                pause = next(pauses)
                log.warning(
                    "Deployment watch on %s failed (%s); requests read Deployments directly "
                    "until it is back, retrying in %.1f s",
                    self._scope,
                    error.message,
                    pause,
                )
                await asyncio.sleep(pause)
            except Exception:  # a bug of ours must not end the cache for good
                self.synced = False
                pause = next(pauses)
                log.exception("Deployment watch on %s failed unexpectedly", self._scope)
                await asyncio.sleep(pause)

    async def _list(self) -> str:
        """Replace the entries with a fresh list; the resourceVersion to watch from."""
        self.synced = False
        entries: dict[Key, Deployment] = {}
        oversized: set[Key] = set()
        token: str | None = None
        while True:
            page = await self._kube.list_deployments(
                self.namespace,
                limit=self._settings.page_size,
                continue_token=token,
                timeout=self._settings.list_timeout,
            )
            for item in page.get("items") or ():
                self._keep(entries, oversized, item)
            meta = page.get("metadata") or {}
            token = meta.get("continue") or None
            if token is None:
                break
        self.entries = entries
        self.oversized = oversized
        self.lists += 1
        if self.lists > 1:
            self._observer.cache_relisted()
        version = meta.get("resourceVersion")
        if not isinstance(version, str) or not version:
            raise KubeError("the Deployment list has no resourceVersion to watch from")
        return version

    async def _watch(self, version: str) -> str:
        """Apply events until the API server ends the watch; the version to resume from."""
        seconds = random.randint(self._settings.watch_seconds, 2 * self._settings.watch_seconds)
        try:
            async with self._kube.watch_deployments(
                self.namespace,
                resource_version=version,
                timeout_seconds=seconds,
                # Bookmarks come about once a minute; nothing at all for much longer than the
                # watch should last means a dead connection.
                read_timeout=seconds + 30.0,
            ) as events:
                self._connected()
                async with contextlib.aclosing(events):
                    async for event in events:
                        version = self._apply(event, version)
        except KubeError as error:
            if error.status == 410:
                raise _Gone() from error
            raise
        finally:
            self.synced = False
        return version

    def _connected(self) -> None:
        self.synced = True
        self.synced_once.set()

    def _apply(self, event: Mapping[str, Any], version: str) -> str:
        kind = event.get("type")
        obj = event.get("object")
        if not isinstance(obj, Mapping):
            raise KubeError(f"a watch event without an object: {str(event)[:200]}")
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise _Gone()
            raise KubeError(f"the watch ended with an error: {obj.get('message') or obj}")
        meta = obj.get("metadata")
        meta = meta if isinstance(meta, Mapping) else {}
        new_version = meta.get("resourceVersion")
        if kind in ("ADDED", "MODIFIED"):
            self._keep(self.entries, self.oversized, obj)
        elif kind == "DELETED":
            key = (str(meta.get("namespace")), str(meta.get("name")))
            self.entries.pop(key, None)
            self.oversized.discard(key)
        elif kind != "BOOKMARK":
            raise KubeError(f"unexpected watch event type {kind!r}")
        return new_version if isinstance(new_version, str) and new_version else version

    def _keep(
        self, entries: dict[Key, Deployment], oversized: set[Key], obj: Mapping[str, Any]
    ) -> None:
        meta = obj.get("metadata")
        meta = meta if isinstance(meta, Mapping) else {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        entries.pop(key, None)
        try:
            found = Deployment.from_manifest(obj)
        except DeploymentError:
            # Not exposable: leave it to a GET, whose answer says why to the caller.
            oversized.discard(key)
            return
        named = tuple(port for port in found.container_ports if port.name)
        too_many = len(named) > self._settings.max_named_ports
        if too_many or len(found.selector) > self._settings.max_selector_labels:
            if key not in oversized:
                oversized.add(key)
                log.warning(
                    "Deployment %s/%s has %d named container ports and %d selector labels, "
                    "more than the cache keeps (%d, %d): requests for it read it with a GET",
                    *key,
                    len(named),
                    len(found.selector),
                    self._settings.max_named_ports,
                    self._settings.max_selector_labels,
                )
            return
        oversized.discard(key)
        if len(named) != len(found.container_ports):
            # Unnamed ports resolve no named target port; keeping them would only cost memory.
            found = replace(found, container_ports=named)
        entries[key] = found


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
        self._reflectors = {
            scope: _Reflector(kube, scope, chosen, self._observer) for scope in scopes
        }
        self._everywhere = self._reflectors.get(None)
        self._reads: dict[Key, _SharedRead] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.hits = 0
        self.misses = 0

    async def start(self) -> None:
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(reflector.run(), name=f"deployment-watch-{scope or 'all'}")
            for scope, reflector in self._reflectors.items()
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for reflector in self._reflectors.values():
            reflector.synced = False

    async def wait_synced(self) -> None:
        """Until every watch has listed and connected once (tests and benchmarks use this)."""
        await asyncio.gather(*(r.synced_once.wait() for r in self._reflectors.values()))

    @property
    def synced(self) -> bool:
        return all(reflector.synced for reflector in self._reflectors.values())

    @property
    def size(self) -> int:
        return sum(len(reflector.entries) for reflector in self._reflectors.values())

    @property
    def oversized(self) -> int:
        """How many Deployments are over the bounds of what the cache keeps, and so read with
        a GET for every request."""
        return sum(len(reflector.oversized) for reflector in self._reflectors.values())

    @property
    def lists(self) -> int:
        return sum(reflector.lists for reflector in self._reflectors.values())

    def peek(self, namespace: str, name: str) -> Deployment | None:
        """What the cache would answer now without reading, or None."""
        reflector = self._everywhere or self._reflectors.get(namespace)
        if reflector is None or not reflector.synced:
            return None
        return reflector.entries.get((namespace, name))

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
