"""A real grpc.aio server on port 0, on the real control plane, and a client through a real
channel; plus the Deployment that the rules expose."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client

from client import Client, connect
from server.app import RunningServer, ServerConfig, serving
from tests import objects

# Container ports of the test Deployment, so named target ports have something to name.
CONTAINER_PORTS = [("http", 8088, "TCP"), ("grpc", 9090, "TCP"), ("dns", 53, "UDP")]
SELECTOR = {"app": "web", "tier": "frontend"}


@pytest.fixture(scope="session")
async def grpc_server(api_client: client.ApiClient) -> AsyncIterator[RunningServer]:
    async with serving(api_client, ServerConfig(listen="127.0.0.1:0")) as running:
        yield running


@pytest.fixture
def target(grpc_server: RunningServer) -> str:
    return f"127.0.0.1:{grpc_server.port}"


@pytest.fixture
async def k8sailor(target: str) -> AsyncIterator[Client]:
    async with connect(target) as connected:
        yield connected


@pytest.fixture
async def deployment(api_client: client.ApiClient, namespace: str) -> dict[str, Any]:
    """The Deployment "web" in the test's namespace, as the API server returned it."""
    apps = client.AppsV1Api(api_client)
    created = await apps.create_namespaced_deployment(
        namespace, objects.deployment("web", SELECTOR, CONTAINER_PORTS)
    )
    result: dict[str, Any] = api_client.sanitize_for_serialization(created)
    return result
