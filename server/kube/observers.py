"""What the Kubernetes adapter tells whoever watches it: metrics, tracing and tests plug in here.

These are Protocols, so that an observer is anything with the right methods: server.observability
implements them without importing server.kube (app.py hands its objects in), and a test can
pass a small class of its own. Every method runs on a request's path or in the cache's loop:
it must neither block nor raise.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["CacheObserver", "CallObserver", "NoCacheObserver", "NoObserver"]


class CallObserver(Protocol):
    """Told about every API call as it happens.

    One attempt is one call_started and one call_finished; a call that is tried again also
    gets call_retried (with why) before its next attempt. verb is the Kubernetes verb (get,
    list, watch, create, patch, delete), resource the plural ("services"), code the HTTP
    status as text, or "error"/"timeout" when no answer came.
    """

    def call_started(self, verb: str, resource: str) -> None: ...

    def call_finished(self, verb: str, resource: str, code: str, seconds: float) -> None: ...

    def call_retried(self, verb: str, resource: str, reason: str) -> None: ...


class NoObserver:
    """The default CallObserver: notices nothing."""

    def call_started(self, verb: str, resource: str) -> None:
        pass

    def call_finished(self, verb: str, resource: str, code: str, seconds: float) -> None:
        pass

    def call_retried(self, verb: str, resource: str, reason: str) -> None:
        pass


class CacheObserver(Protocol):
    """Told how the Deployment cache (server.kube.deployments) answers and keeps up."""

    def cache_hit(self) -> None:
        """A Deployment read answered from the watch."""

    def cache_missed(self) -> None:
        """A Deployment read the watch could not answer: the API server is asked."""

    def cache_relisted(self) -> None:
        """The cache listed everything again after its first list (410 Gone, or a failure)."""


class NoCacheObserver:
    """The default CacheObserver: notices nothing."""

    def cache_hit(self) -> None:
        pass

    def cache_missed(self) -> None:
        pass

    def cache_relisted(self) -> None:
        pass
