"""The Kubernetes adapter: the only code that talks to Kubernetes or reads its answers.

Its public face is re-exported here; the parts live in the modules beside this one.
"""

from server.kube.client import (
    FIELD_MANAGER,
    NO_RETRIES,
    SERVICE_ACCOUNT_DIR,
    Json,
    Kube,
    ReloadableApiClient,
    RetryPolicy,
    load_api_client,
)
from server.kube.observers import CacheObserver, CallObserver

__all__ = [
    "FIELD_MANAGER",
    "NO_RETRIES",
    "SERVICE_ACCOUNT_DIR",
    "CacheObserver",
    "CallObserver",
    "Json",
    "Kube",
    "ReloadableApiClient",
    "RetryPolicy",
    "load_api_client",
]
