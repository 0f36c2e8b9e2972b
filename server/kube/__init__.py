"""The Kubernetes adapter: the only code that talks to Kubernetes or reads its answers.

Its public face is re-exported here; the parts live in the modules beside this one: client
(the calls, Kube), transport (our own HTTP session), retries, credentials, answers (reading
bodies and events), errors (every answer's meaning), fairness and limits (API call slots),
deployments and informer (the Deployment cache), observers (what it reports).
"""

from server.kube.answers import Json
from server.kube.client import FIELD_MANAGER, Kube
from server.kube.credentials import SERVICE_ACCOUNT_DIR, ReloadableApiClient, load_api_client
from server.kube.observers import CacheObserver, CallObserver
from server.kube.retries import NO_RETRIES, RetryPolicy

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
