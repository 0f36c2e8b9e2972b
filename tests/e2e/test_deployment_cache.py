"""The Deployment watch cache and fair sharing of API slots, on the real API server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio import config as kube_config

from client import Client, Outcome, Result
from server.app import RunningServer, ServerConfig
from server.kube import Json, Kube
from server.kube.deployments import DeploymentCache, WatchSettings
from server.kube.errors import KubeError
from server.manifests import Deployment
from tests import objects
from tests.conftest import Cluster
from tests.e2e.conftest import CONTAINER_PORTS, SELECTOR
from tests.rbac import until_effective
from tests.servers import running_over

# Guards against a hang, not a timing assertion: a watch on the local API server syncs in
# milliseconds.
SYNC_GUARD_S = 60.0
RBAC = "rbac.authorization.k8s.io"


async def collect(k8sailor: Client, namespace: str, rules: list[str]) -> list[Result]:
    return [r async for r in k8sailor.create_services("web", rules, namespace=namespace)]


async def owner_uid(api: client.ApiClient, namespace: str, service: str) -> str:
    found = await client.CoreV1Api(api).read_namespaced_service(service, namespace)
    (owner,) = found.metadata.owner_references
    return str(owner.uid)


def cache_of(running: RunningServer) -> DeploymentCache:
    assert running.deployments is not None, "this server has no Deployment cache"
    return running.deployments


def knows(cache: DeploymentCache, namespace: str, name: str) -> Callable[[], bool]:
    return lambda: cache.peek(namespace, name) is not None


async def until(condition: Callable[[], bool]) -> None:
    """Until condition() is true, checking once per loop turn (bounded by SYNC_GUARD_S)."""
    async with asyncio.timeout(SYNC_GUARD_S):
        # The cache offers no event per Deployment, so this polls its state.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_requests_use_the_watched_deployment_without_reading_it(
    grpc_server: RunningServer, k8sailor: Client, namespace: str, deployment: dict[str, Any]
) -> None:
    cache = cache_of(grpc_server)
    await asyncio.wait_for(cache.wait_synced(), SYNC_GUARD_S)
    await until(lambda: cache.peek(namespace, "web") is not None)
    hits = cache.hits
    results = await collect(k8sailor, namespace, ["80:8088", "grpc=81:grpc"])
    assert [r.outcome for r in results] == [Outcome.CREATED] * 2
    assert cache.hits == hits + 1
    seen = cache.peek(namespace, "web")
    assert seen is not None
    assert seen.uid == deployment["metadata"]["uid"]
    assert dict(seen.selector) == SELECTOR
    assert {port.name for port in seen.container_ports} == {name for name, _, _ in CONTAINER_PORTS}


async def test_a_deployment_created_again_under_its_name_gets_services_with_the_new_uid(
    grpc_server: RunningServer,
    k8sailor: Client,
    api_client: client.ApiClient,
    namespace: str,
    deployment: dict[str, Any],
) -> None:
    cache = cache_of(grpc_server)
    await asyncio.wait_for(cache.wait_synced(), SYNC_GUARD_S)
    old_uid = deployment["metadata"]["uid"]
    await until(lambda: cache.peek(namespace, "web") is not None)
    (first,) = await collect(k8sailor, namespace, ["first=80:8088"])
    assert first.outcome is Outcome.CREATED
    assert await owner_uid(api_client, namespace, "first") == old_uid

    apps = client.AppsV1Api(api_client)
    await apps.delete_namespaced_deployment("web", namespace)
    created = await apps.create_namespaced_deployment(
        namespace, objects.deployment("web", SELECTOR, CONTAINER_PORTS)
    )
    new_uid = created.metadata.uid
    assert new_uid != old_uid
    # The issue's case: a request sent a second after the re-creation.
    await asyncio.sleep(1.0)
    hits = cache.hits
    (second,) = await collect(k8sailor, namespace, ["second=80:8088"])
    assert second.outcome is Outcome.CREATED
    assert await owner_uid(api_client, namespace, "second") == new_uid
    assert cache.hits == hits + 1, "the answer should have come from the watch"


async def test_a_deployment_the_cache_has_not_seen_is_read_and_found(
    api_client: client.ApiClient, namespace: str
) -> None:
    # The cache watches another namespace only, so every Deployment here is a miss.
    config = ServerConfig(listen="127.0.0.1:0", watch_namespaces=("kube-system",))
    async with running_over(api_client, config) as (running, k8sailor):
        cache = cache_of(running)
        apps = client.AppsV1Api(api_client)
        await apps.create_namespaced_deployment(
            namespace, objects.deployment("web", SELECTOR, CONTAINER_PORTS)
        )
        (result,) = await collect(k8sailor, namespace, ["80:http"])
        assert result.outcome is Outcome.CREATED
        assert (cache.hits, cache.misses) == (0, 1)


class CountingKube(Kube):
    """The real adapter, counting the Deployment GETs that reach the API server."""

    def __init__(self, api: client.ApiClient) -> None:
        super().__init__(api, max_in_flight=8)
        self.deployment_reads = 0

    async def read_deployment(self, namespace: str, name: str, *, timeout: float | None) -> Json:
        self.deployment_reads += 1
        return await super().read_deployment(namespace, name, timeout=timeout)


async def test_concurrent_misses_for_one_deployment_share_one_read(
    api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    kube = CountingKube(api_client)
    async with kube:
        cache = DeploymentCache(kube, ["kube-system"])  # not started: every lookup is a miss
        found = await asyncio.gather(
            *(cache.get(namespace, "web", timeout=30) for _ in range(20)),
            cache.get(namespace, "nope", timeout=30),
            return_exceptions=True,
        )
        assert kube.deployment_reads == 2
        assert all(isinstance(one, Deployment) for one in found[:20])
        assert {one.uid for one in found[:20] if isinstance(one, Deployment)} == {
            deployment["metadata"]["uid"]
        }
        assert isinstance(found[20], KubeError)
        # Misses later on read again: answers are not kept outside the watch.
        await cache.get(namespace, "web", timeout=30)
        assert kube.deployment_reads == 3


async def test_a_watch_the_api_server_ends_is_resumed_without_listing_again(
    api_client: client.ApiClient, namespace: str
) -> None:
    settings = WatchSettings(watch_seconds=1)
    async with Kube(api_client, max_in_flight=4) as kube:
        cache = DeploymentCache(kube, [namespace], settings)
        await cache.start()
        try:
            await asyncio.wait_for(cache.wait_synced(), SYNC_GUARD_S)
            apps = client.AppsV1Api(api_client)
            for index in range(3):
                # Each wait outlasts a watch (1-2 s), so events arrive over resumed watches.
                await asyncio.sleep(2.5)
                name = f"d{index}"
                made = objects.deployment(name, {"app": name})
                await apps.create_namespaced_deployment(namespace, made)
                await until(knows(cache, namespace, name))
            assert cache.lists == 1
            await apps.delete_namespaced_deployment("d0", namespace)
            await until(lambda: cache.peek(namespace, "d0") is None and cache.synced)
        finally:
            await cache.stop()


@asynccontextmanager
async def restricted_identity(
    cluster: Cluster, api_client: client.ApiClient, namespace: str
) -> AsyncIterator[client.ApiClient]:
    """An identity that may read, list and watch Deployments and create Services in one
    namespace only, as a namespace-restricted install has."""
    user = f"k8sailor-test-restricted-{namespace}"
    rbac = client.RbacAuthorizationV1Api(api_client)
    # Plain JSON bodies; the client sends them as they are.
    role: Any = {
        "metadata": {"name": "k8sailor"},
        "rules": [
            {
                "apiGroups": ["apps"],
                "resources": ["deployments"],
                "verbs": ["get", "list", "watch"],
            },
            {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "create"]},
        ],
    }
    await rbac.create_namespaced_role(namespace, role)
    binding: Any = {
        "metadata": {"name": "k8sailor"},
        "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "k8sailor"},
        "subjects": [{"apiGroup": RBAC, "kind": "User", "name": user}],
    }
    await rbac.create_namespaced_role_binding(namespace, binding)
    watch = client.V1PolicyRule(api_groups=["apps"], resources=["deployments"], verbs=["watch"])
    await until_effective(api_client, namespace, binding["subjects"][0], watch)
    restricted = await kube_config.new_client_from_config(config_file=str(cluster.kubeconfig))
    restricted.set_default_header("Impersonate-User", user)
    async with restricted:
        yield restricted


async def test_a_namespace_restricted_install_watches_its_namespace(
    cluster: Cluster, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    async with restricted_identity(cluster, api_client, namespace) as restricted:
        config = ServerConfig(listen="127.0.0.1:0", watch_namespaces=(namespace,))
        async with running_over(restricted, config) as (running, k8sailor):
            cache = cache_of(running)
            await asyncio.wait_for(cache.wait_synced(), SYNC_GUARD_S)
            (result,) = await collect(k8sailor, namespace, ["80:http"])
            assert result.outcome is Outcome.CREATED
            assert cache.hits == 1


async def test_without_the_right_to_list_requests_read_their_deployment(
    cluster: Cluster, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    # The identity may list in its namespace only, and the cache is told to watch the whole
    # cluster: the list is refused, and requests fall back to a GET each.
    config = ServerConfig(listen="127.0.0.1:0")
    async with (
        restricted_identity(cluster, api_client, namespace) as restricted,
        running_over(restricted, config) as (running, k8sailor),
    ):
        cache = cache_of(running)
        (result,) = await collect(k8sailor, namespace, ["80:http"])
        assert result.outcome is Outcome.CREATED
        assert not cache.synced
        assert (cache.hits, cache.misses) == (0, 1)


async def test_with_the_cache_off_every_request_reads_its_deployment(
    api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    config = ServerConfig(listen="127.0.0.1:0", deployment_cache="off")
    async with running_over(api_client, config) as (running, k8sailor):
        assert running.deployments is None
        (result,) = await collect(k8sailor, namespace, ["80:http"])
        assert result.outcome is Outcome.CREATED


async def test_a_small_request_is_not_queued_behind_a_big_one(
    api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    """With one API slot, a one-rule request sent while a big request runs gets its turn
    after at most a few of the big request's calls, not after all of them."""
    big_rules = 120
    config = ServerConfig(listen="127.0.0.1:0", max_in_flight=1)
    arrivals: list[str] = []
    async with running_over(api_client, config) as (running, k8sailor):
        await asyncio.wait_for(cache_of(running).wait_synced(), SYNC_GUARD_S)
        started = asyncio.Event()

        async def big() -> None:
            rules = [f"big-{i}=80" for i in range(big_rules)]
            async for result in k8sailor.create_services("web", rules, namespace=namespace):
                assert result.outcome is Outcome.CREATED, result
                arrivals.append("big")
                started.set()

        async def small() -> None:
            await started.wait()
            (result,) = await collect(k8sailor, namespace, ["small=80"])
            assert result.outcome is Outcome.CREATED, result
            arrivals.append("small")

        await asyncio.gather(big(), small())
    position = arrivals.index("small")
    # First come, first served puts it last, after all of the big request's results; round
    # robin gives it the next turn once it asks, a few of the big request's calls later.
    assert position < big_rules // 2, arrivals


# The bound the README states: what a server started without options keeps.
MAX_NAMED_PORTS = 128
MAX_SELECTOR_LABELS = 32


def many_ports(name: str, named: int, unnamed: int = 0) -> client.V1Deployment:
    """A Deployment "name" with `named` named container ports p0, p1, ... and `unnamed` more
    without a name (replicas 0: nothing needs to run)."""
    made = objects.deployment(
        name, {"app": name}, [(f"p{i}", 1000 + i, "TCP") for i in range(named)]
    )
    made.spec.replicas = 0
    (container,) = made.spec.template.spec.containers
    container.ports += [
        client.V1ContainerPort(container_port=20000 + i, protocol="TCP") for i in range(unnamed)
    ]
    return made


async def test_the_cache_keeps_a_deployments_named_ports_up_to_the_bound(
    api_client: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(api_client)
    await apps.create_namespaced_deployment(namespace, many_ports("full", MAX_NAMED_PORTS, 40))
    config = ServerConfig(listen="127.0.0.1:0", watch_namespaces=(namespace,))
    async with running_over(api_client, config) as (running, k8sailor):
        cache = cache_of(running)
        await asyncio.wait_for(cache.wait_synced(), SYNC_GUARD_S)
        kept = cache.peek(namespace, "full")
        assert kept is not None
        # Exactly the named ones: the unnamed resolve no target port and are not kept.
        assert len(kept.container_ports) == MAX_NAMED_PORTS
        assert all(port.name for port in kept.container_ports)
        assert cache.oversized == 0
        assert WatchSettings().max_named_ports == MAX_NAMED_PORTS
        last = f"p{MAX_NAMED_PORTS - 1}"
        (result,) = [
            r async for r in k8sailor.create_services("full", [f"80:{last}"], namespace=namespace)
        ]
        assert result.outcome is Outcome.CREATED, result
        assert cache.hits == 1


async def test_a_deployment_over_the_bound_is_read_each_time_and_exposed_as_without_the_cache(
    api_client: client.ApiClient, namespace: str
) -> None:
    """A Deployment with more named ports than the cache keeps is not kept at all: every request
    reads it, and gets what `--deployment-cache off` gives, down to the error's text."""
    apps = client.AppsV1Api(api_client)
    over = MAX_NAMED_PORTS + 72
    await apps.create_namespaced_deployment(namespace, many_ports("big", over))
    last = f"p{over - 1}"  # past the bound: keeping the first ports only would miss it
    rules = [f"last=80:{last}", "first=81:p0", "missing=82:nope"]
    cached = ServerConfig(listen="127.0.0.1:0", watch_namespaces=(namespace,))
    async with running_over(api_client, cached) as (running, k8sailor):
        cache = cache_of(running)
        await asyncio.wait_for(cache.wait_synced(), SYNC_GUARD_S)
        assert cache.peek(namespace, "big") is None
        assert (cache.size, cache.oversized) == (0, 1)
        with_cache = sorted(
            [r async for r in k8sailor.create_services("big", rules, namespace=namespace)],
            key=lambda r: r.index,
        )
        assert (cache.hits, cache.misses) == (0, 1)
    off = ServerConfig(listen="127.0.0.1:0", deployment_cache="off")
    async with running_over(api_client, off) as (_, k8sailor):
        without_cache = sorted(
            [r async for r in k8sailor.create_services("big", rules, namespace=namespace)],
            key=lambda r: r.index,
        )
    assert [r.outcome for r in with_cache] == [Outcome.CREATED, Outcome.CREATED, Outcome.INVALID]
    # The same Services (now there: UNCHANGED) and the same refusal of the missing name.
    assert [r.outcome for r in without_cache] == [
        Outcome.UNCHANGED,
        Outcome.UNCHANGED,
        Outcome.INVALID,
    ]
    assert with_cache[2].error == without_cache[2].error
    assert last in with_cache[2].error
    core = client.CoreV1Api(api_client)
    made = await core.read_namespaced_service("last", namespace)
    assert made.spec.ports[0].target_port == last

    # Trimmed under the bound, it is kept again; deleted, it is forgotten.
    async with running_over(api_client, cached) as (running, _):
        cache = cache_of(running)
        await asyncio.wait_for(cache.wait_synced(), SYNC_GUARD_S)
        current = await apps.read_namespaced_deployment("big", namespace)
        (container,) = current.spec.template.spec.containers
        container.ports = container.ports[:3]
        await apps.replace_namespaced_deployment("big", namespace, current)
        await until(knows(cache, namespace, "big"))
        assert cache.oversized == 0
        await apps.delete_namespaced_deployment("big", namespace)
        await until(lambda: cache.peek(namespace, "big") is None)
        assert (cache.size, cache.oversized) == (0, 0)


async def test_a_deployment_with_more_selector_labels_than_the_bound_is_read_each_time(
    api_client: client.ApiClient, namespace: str
) -> None:
    assert WatchSettings().max_selector_labels == MAX_SELECTOR_LABELS
    labels = {f"label-{i}": "x" for i in range(MAX_SELECTOR_LABELS + 1)}
    apps = client.AppsV1Api(api_client)
    made = objects.deployment("labelled", labels, [("http", 8080, "TCP")])
    made.spec.replicas = 0
    await apps.create_namespaced_deployment(namespace, made)
    config = ServerConfig(listen="127.0.0.1:0", watch_namespaces=(namespace,))
    async with running_over(api_client, config) as (running, k8sailor):
        cache = cache_of(running)
        await asyncio.wait_for(cache.wait_synced(), SYNC_GUARD_S)
        assert cache.peek(namespace, "labelled") is None
        assert cache.oversized == 1
        (result,) = [
            r async for r in k8sailor.create_services("labelled", ["80:http"], namespace=namespace)
        ]
        assert result.outcome is Outcome.CREATED, result
        assert (cache.hits, cache.misses) == (0, 1)
    service = await client.CoreV1Api(api_client).read_namespaced_service("labelled", namespace)
    assert service.spec.selector == labels
