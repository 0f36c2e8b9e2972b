"""What the create flow needs of the cluster, as a narrow protocol (Services) that server.kube's
Kube fits (app.py passes it, with its Deployment cache) and unit tests fake; and the Deployment
read once per request (from a server.kube.deployments source), its failures turned into
request errors.

Every method raises server.kube.errors' KubeError kinds for what the API server answered."""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Any

from server.domain.errors import DeploymentNotFound, DeploymentUnusable, request_error
from server.kube.deployments import DeploymentReader, DeploymentSource
from server.kube.errors import KubeError, KubeNotFound
from server.manifests import Deployment, DeploymentError

Json = dict[str, Any]


class Services(DeploymentReader, typing.Protocol):
    """The Services (and the Deployment, when no cache reads it: DeploymentReader) of the
    cluster."""

    async def read_service(self, namespace: str, name: str, *, timeout: float | None) -> Json: ...

    async def create_service(
        self, namespace: str, manifest: Mapping[str, Any], *, dry_run: bool, timeout: float | None
    ) -> Json:
        """The Service as created (node ports and cluster IP filled in); with dry_run, as it
        would be."""
        ...


async def read_deployment(
    deployments: DeploymentSource, namespace: str, name: str, *, timeout: float | None
) -> Deployment:
    """The Deployment to expose, once per request, with its failures as request errors:
    DeploymentNotFound, DeploymentUnusable, or the cluster's failure (request_error)."""
    try:
        return await deployments.get(namespace, name, timeout=timeout)
    except KubeNotFound as error:
        raise DeploymentNotFound(
            f'Deployment "{name}" not found in namespace "{namespace}" ({error.message})'
        ) from error
    except KubeError as error:
        raise request_error(error, f'reading Deployment "{name}"') from error
    except DeploymentError as error:
        raise DeploymentUnusable(str(error)) from error
