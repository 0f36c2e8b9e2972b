"""server.kube.paths refuses names that would address another path than the one meant.

Percent-quoting leaves "." and ".." alone and the HTTP client resolves them, so before these
checks `delete_service("ns", "..")` sent DELETE /api/v1/namespaces/ns/, and an empty name
addressed the collection (a DELETE there is a deletecollection)."""

from __future__ import annotations

import pytest
from aiohttp import web

from server.kube import NO_RETRIES, Kube, paths
from tests.unit.fakeapi import api_client_for

ODD_NAMES = ["", ".", "..", "a/b", "%2e%2e", "A", "a b", "-a", "a" * 300]


def test_well_formed_names_make_the_paths_they_always_made() -> None:
    assert paths.services("ns") == "/api/v1/namespaces/ns/services"
    assert paths.service("ns", "web") == "/api/v1/namespaces/ns/services/web"
    assert paths.deployments(None) == "/apis/apps/v1/deployments"
    assert paths.deployments("ns") == "/apis/apps/v1/namespaces/ns/deployments"
    assert paths.deployment("ns", "web.v2") == "/apis/apps/v1/namespaces/ns/deployments/web.v2"


@pytest.mark.parametrize("namespace", ODD_NAMES)
def test_a_namespace_that_is_not_a_dns1123_label_is_refused(namespace: str) -> None:
    with pytest.raises(ValueError, match="namespace"):
        paths.services(namespace)
    with pytest.raises(ValueError, match="namespace"):
        paths.deployments(namespace)
    with pytest.raises(ValueError, match="namespace"):
        paths.service(namespace, "web")


@pytest.mark.parametrize("name", [*ODD_NAMES, "a.b", "1a"])
def test_a_service_name_that_is_not_a_dns1035_label_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="Service name"):
        paths.service("ns", name)


@pytest.mark.parametrize("name", ODD_NAMES)
def test_a_deployment_name_that_is_not_a_dns1123_subdomain_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="Deployment name"):
        paths.deployment("ns", name)


async def test_kube_sends_nothing_for_a_name_that_would_climb_out_of_its_path() -> None:
    seen: list[str] = []

    async def record(request: web.Request) -> web.StreamResponse:
        seen.append(f"{request.method} {request.path}")
        return web.json_response({"kind": "Status", "code": 200}, status=200)

    async with api_client_for(record) as api:
        kube = Kube(api, max_in_flight=1, retry=NO_RETRIES)
        with pytest.raises(ValueError, match="not valid in an API path"):
            await kube.delete_service("ns", "..", uid="u", dry_run=False, timeout=5)
        with pytest.raises(ValueError, match="not valid in an API path"):
            await kube.delete_service("ns", "", uid="u", dry_run=False, timeout=5)
        with pytest.raises(ValueError, match="not valid in an API path"):
            await kube.list_services("..", label_selector="a=b", timeout=5)
        with pytest.raises(ValueError, match="not valid in an API path"):
            await kube.read_deployment("ns", ".", timeout=5)
        await kube.close()
    assert seen == []
