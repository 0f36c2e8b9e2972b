"""Fixtures shared by every tier: the real control plane and a fresh namespace per test.

By default the session builds (once, cached) and starts its own etcd + kube-apiserver on
127.0.0.1 and stops it when the run ends, fails or is interrupted. Set
K8SAILOR_TEST_KUBECONFIG=/path/to/kubeconfig to run against an existing cluster instead; the
tests then only create and delete namespaces named k8sailor-test-*.
"""

from __future__ import annotations

import os

# The control plane's binaries are started (and restarted, in tests/faults) with fork and exec
# while grpc.aio servers and channels run in this process. gRPC's C core then runs its fork
# handlers, which, with its threads busy, crash the child or this process now and then
# (SIGSEGV in subprocess._execute_child; a kube-apiserver "exited with -11" before it ran).
# Its fork support is for children that go on using gRPC, which ours never do: off, before
# grpc is first imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
import gc
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from tests.controlplane import NODE_PORT_RANGE, running

# An aiohttp session or connector left open (a Kube, an ApiClient, a ClientSession never closed)
# is reported only when it is garbage-collected, as a ResourceWarning and a line through the
# event loop's exception handler, often after the run has ended, where nobody reads it. These
# filters make that report an error (only aiohttp's unclosed reports: other ResourceWarnings
# stay warnings), which pytest then raises in the phase that collected it; the fixture below
# collects the garbage of each test as that test ends, so the failure names the test that
# leaked. An error in __del__ reaches pytest as an unraisable exception, hence the third filter.
# Where the session was made: run with PYTHONTRACEMALLOC=20.
_UNCLOSED_AIOHTTP = (
    "error:Unclosed client session:ResourceWarning",
    "error:Unclosed connector:ResourceWarning",
    "error:Exception ignored.*(ClientSession|BaseConnector)[.]__del__"
    ":pytest.PytestUnraisableExceptionWarning",
)


def pytest_configure(config: pytest.Config) -> None:
    for line in _UNCLOSED_AIOHTTP:
        config.addinivalue_line("filterwarnings", line)


def pytest_collection_finish(session: pytest.Session) -> None:
    # What collection made (modules, hypothesis, the test items) lives for the whole run: out of
    # the collector's sight, so that the collection after each test (below) looks only at what
    # tests made since, a few milliseconds instead of a tenth of a second.
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _unclosed_sessions_fail_their_test() -> Iterator[None]:
    yield
    # A session sits in reference cycles (session, connector, their callbacks): without this it
    # is collected during some later test, or at exit.
    gc.collect()


@dataclass(frozen=True)
class Cluster:
    """What a test needs to know about the cluster it runs against."""

    kubeconfig: Path
    local: bool  # started by this run: the service CIDR and node-port range are ours


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    external = os.environ.get("K8SAILOR_TEST_KUBECONFIG")
    if external:
        yield Cluster(kubeconfig=Path(external), local=False)
        return
    with running(tmp_path_factory.mktemp("controlplane")) as plane:
        yield Cluster(kubeconfig=plane.kubeconfig, local=True)


@pytest.fixture(scope="session")
def node_port_range() -> str:
    return NODE_PORT_RANGE


@pytest.fixture(scope="session")
async def api_client(cluster: Cluster) -> AsyncIterator[client.ApiClient]:
    api = await config.new_client_from_config(config_file=str(cluster.kubeconfig))
    async with api:
        yield api


@pytest.fixture
async def namespace(api_client: client.ApiClient) -> AsyncIterator[str]:
    """A namespace of the test's own, deleted afterwards (the local control plane's namespace
    controller then empties and removes it)."""
    name = f"k8sailor-test-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(api_client)
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    # Node ports are cluster-wide, and the namespace controller frees them only once it gets
    # to this namespace: delete the Services first, so later tests can use the same ports.
    services = await core.list_namespaced_service(name)
    for service in services.items:
        try:
            await core.delete_namespaced_service(service.metadata.name, name)
        except ApiException as error:
            # Gone since the list: the garbage collector removes the Services of a test's
            # deleted Deployment (their owner) on its own time.
            if error.status != 404:
                raise
    await core.delete_namespace(name)
