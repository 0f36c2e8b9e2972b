"""The Kubernetes adapter: the only code that talks to Kubernetes or reads its answers.

Its public face is re-exported here; the parts live in the modules beside this one:

- :mod:`.client`: :class:`Kube`, the calls k8sailor makes, each with a slot, retries and an
  observer.
- :mod:`.transport`: k8sailor's own HTTP session to the API server (TLS, trace configs).
- :mod:`.paths`: where each resource is in the REST API, and the query parameters' spelling.
- :mod:`.retries`: how one call is tried again (the policy and the loop).
- :mod:`.credentials`: loading the credentials, and loading them again after a 401.
- :mod:`.answers`: reading answers' bodies and watch events, bounded.
- :mod:`.errors`: what every answer and transport failure means, read once into typed errors.
- :mod:`.ownership`: whether a Service is a Deployment's (defined once), and whether it is
  already the Service a rule would make.
- :mod:`.fairness` and :mod:`.limits`: the API call slots (whose turn, and how many at once).
- :mod:`.deployments` and :mod:`.informer`: the Deployment cache and its list-and-watch loop.
- :mod:`.observers`: the protocols through which metrics, tracing and tests watch it.
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
