"""The Deployment cache's metrics, and the observer that counts them.

`DeploymentCacheMetrics` fits server.kube's CacheObserver by its methods alone (it imports
nothing of server.kube): server.app hands one to the cache when metrics are on.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter

__all__ = [
    "DEPLOYMENT_CACHE_HITS",
    "DEPLOYMENT_CACHE_MISSES",
    "DEPLOYMENT_CACHE_RELISTS",
    "DeploymentCacheMetrics",
]

DEPLOYMENT_CACHE_HITS: Final = Counter(
    "k8sailor_deployment_cache_hits_total",
    "Deployment reads answered from the watch cache.",
)
DEPLOYMENT_CACHE_MISSES: Final = Counter(
    "k8sailor_deployment_cache_misses_total",
    "Deployment reads the watch cache could not answer, so the API server was asked.",
)
DEPLOYMENT_CACHE_RELISTS: Final = Counter(
    "k8sailor_deployment_cache_relists_total",
    "Times the Deployment watch cache listed everything again after its first list (the "
    "watch expired with 410 Gone, or failed).",
)


class DeploymentCacheMetrics:
    """The Deployment cache's observer, in Prometheus terms."""

    def cache_hit(self) -> None:
        DEPLOYMENT_CACHE_HITS.inc()

    def cache_missed(self) -> None:
        DEPLOYMENT_CACHE_MISSES.inc()

    def cache_relisted(self) -> None:
        DEPLOYMENT_CACHE_RELISTS.inc()
