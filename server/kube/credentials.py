"""k8sailor's own credentials: where they are loaded from, and loading them again after a 401.

kubernetes_asyncio's loaders read the kubeconfig (exec and OIDC plugins included) or the
in-cluster service account into a Configuration; server.kube.transport reads the credentials
from it for every request, so loading them again into the same Configuration is all a reload
takes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

from kubernetes_asyncio import client, config

from server.kube.errors import KubeUnauthorized

__all__ = ["SERVICE_ACCOUNT_DIR", "CredentialsReload", "ReloadableApiClient", "load_api_client"]

#: Where the kubelet mounts a pod's ServiceAccount token and the cluster CA.
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class ReloadableApiClient(client.ApiClient):
    """An ApiClient that can load its credentials again, from where they first came.

    Exec and OIDC plugins hand out tokens that expire, token files and the in-cluster token
    are rotated on disk: when the API server answers 401, Kube calls reload_credentials()
    once and tries again. Loading runs kubernetes_asyncio's own loaders again into the live
    Configuration, so everything that holds this client carries on.
    """

    def __init__(
        self,
        configuration: client.Configuration,
        load: Callable[[client.Configuration], Awaitable[None]],
    ) -> None:
        super().__init__(configuration)
        self._load = load

    async def reload_credentials(self) -> None:
        await self._load(self.configuration)


class CredentialsReload:
    """Load the credentials again, once for all the calls that were refused together.

    A call notes `generation` before its attempt; a call whose attempt began before the last
    reload just tries again with what that reload brought, and only a call refused with the
    newest credentials reloads them.
    """

    def __init__(self, reload: Callable[[], Awaitable[None]]) -> None:
        self._reload = reload
        self._lock = asyncio.Lock()
        self.generation = 0

    async def after(self, seen: int, refused: KubeUnauthorized) -> None:
        async with self._lock:
            if self.generation != seen:
                return
            try:
                await self._reload()
            except Exception as error:
                raise KubeUnauthorized(
                    f"{refused.message}; loading the credentials again failed: "
                    f"{type(error).__name__}: {error}",
                    status=refused.status,
                    reason=refused.reason,
                    api_status=refused.api_status,
                ) from error
            finally:
                self.generation += 1


async def load_api_client(
    kubeconfig: str | None,
    context: str | None,
    *,
    pool_size: int,
    service_account_dir: str = SERVICE_ACCOUNT_DIR,
) -> ReloadableApiClient:
    """An ApiClient for the cluster the caller means, able to reload its credentials.

    An explicit --kubeconfig or $KUBECONFIG wins; inside a pod without either, the in-cluster
    service account (its token and ca.crt from service_account_dir; the token is read again
    every minute, as the kubelet rotates it); otherwise ~/.kube/config, as kubectl does.
    """
    in_cluster = "KUBERNETES_SERVICE_HOST" in os.environ
    load: Callable[[client.Configuration], Awaitable[None]]
    if kubeconfig is None and "KUBECONFIG" not in os.environ and in_cluster:
        token = os.path.join(service_account_dir, "token")
        ca = os.path.join(service_account_dir, "ca.crt")

        async def load(configuration: client.Configuration) -> None:
            config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration, token_filename=token, cert_filename=ca
            )

    else:

        async def load(configuration: client.Configuration) -> None:
            # A new loader each time: one that ran before keeps its exec plugin's token
            # until the expiry the plugin gave, even after the API server refused it.
            await config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=configuration
            )

    configuration = client.Configuration()
    await load(configuration)
    # Enough pooled connections for every call the slots let through at once.
    configuration.connection_pool_maxsize = pool_size
    return ReloadableApiClient(configuration, load)
