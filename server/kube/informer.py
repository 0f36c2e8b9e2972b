"""One list-and-watch loop over Deployments, and the facts it keeps: the Deployment cache's
informer (server.kube.deployments answers requests from it).

As client-go's SharedInformer does: list, then watch from the list's resourceVersion (with
bookmarks, so a quiet watch can still resume), list again when the API server says 410 Gone
(KubeGone, as the watch's answer or as an event in it), and start over with a growing pause
after errors. It is `synced` only while its watch is connected.

Only the facts a request needs are kept (server.manifests.Deployment), not the objects, and
of those only what is bounded: the Deployments come from anyone who may create one in a watched
namespace, and an object of the API server's 1.5 MiB can hold tens of thousands of container
ports or labels. The informer keeps a Deployment's named container ports (unnamed ones resolve
no target port) and its selector only up to `WatchSettings.max_named_ports` and
`max_selector_labels`; a Deployment with more is not kept (its key is remembered as oversized),
so every request for it reads it with a GET and gets exactly what `off` would give it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from server.kube.client import Kube
from server.kube.errors import KubeError, KubeGone, from_watch_error
from server.kube.observers import CacheObserver
from server.manifests import Deployment, DeploymentError

__all__ = ["Backoff", "Informer", "Key", "WatchSettings"]

# The cache's logger: its lines are about the Deployment cache, whichever module writes them.
log = logging.getLogger("k8sailor.deployments")

Key = tuple[str, str]  # (namespace, name)


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
    # Bounds on what one cached Deployment may hold (see the module doc). Real
    # Deployments have a handful of each; one over a bound is read with a GET instead.
    max_named_ports: int = 128
    max_selector_labels: int = 32


class Informer:
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
                await self._watch_until_gone(version)
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

    async def _watch_until_gone(self, version: str) -> None:
        """Watch, resuming each time the API server ends a watch, until the version to resume
        from is gone (410, as the watch's answer or as an event in it): then list again. A
        410 to the list itself is an error like any other, retried after a pause."""
        try:
            while True:
                version = await self._watch(version)
        except KubeGone:
            self.synced = False

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
            raise from_watch_error(obj)
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
