"""Every API call is reported to the Kube's CallObserver, once per attempt, with its outcome."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client

from server.kube import Kube
from server.kube.errors import KubeNotFound
from tests.faults.observers import RecordingObserver


async def test_each_call_is_observed_with_its_verb_resource_and_status(
    api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    observer = RecordingObserver()
    async with Kube(api_client, max_in_flight=4, observer=observer) as kube:
        await kube.read_deployment(namespace, "web", timeout=10)
        with pytest.raises(KubeNotFound):
            await kube.read_service(namespace, "absent", timeout=10)
        manifest = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "observed"},
                    "spec": {"ports": [{"port": 80}], "selector": {"app": "web"}}}  # fmt: skip
        await kube.create_service(namespace, manifest, dry_run=False, timeout=10)

    assert observer.started == [
        ("get", "deployments"), ("get", "services"), ("create", "services")
    ]  # fmt: skip
    assert observer.finished == [
        ("get", "deployments", "200"), ("get", "services", "404"), ("create", "services", "201")
    ]  # fmt: skip
    assert all(seconds > 0 for seconds in observer.seconds)
    assert observer.retried == []
