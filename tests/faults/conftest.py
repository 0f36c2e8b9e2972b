"""Fault tests: the real API server made to throttle, stall, restart or refuse our credentials.

Each test that breaks the API server breaks a path of its own (a proxy in front of the shared
control plane, or a control plane of its own), so the other tests never see the fault.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client

from tests import objects

SELECTOR = {"app": "web"}


@pytest.fixture
async def deployment(api_client: client.ApiClient, namespace: str) -> dict[str, Any]:
    """The Deployment "web" in the test's namespace, as the API server returned it."""
    apps = client.AppsV1Api(api_client)
    created = await apps.create_namespaced_deployment(
        namespace, objects.deployment("web", SELECTOR, [("http", 8088, "TCP")])
    )
    result: dict[str, Any] = api_client.sanitize_for_serialization(created)
    return result
