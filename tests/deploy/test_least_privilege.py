"""k8sailor's ClusterRole is enough, and no more, on the real API server.

- Enough: the end-to-end tests that talk to k8sailor through a client (every test of
  tests/e2e/test_exposure.py and test_lifecycle.py that takes the `k8sailor` fixture: create,
  list, delete, apply) run again here, against the
  installed wheel serving with nothing but the ServiceAccount's token (tests/deploy/conftest.py).
- No more: with the same token the API server refuses everything outside the documented set, and
  `kubectl auth can-i --list` for the ServiceAccount shows exactly the documented set on top of
  what every authenticated identity may do.
- Documented: the set is README.md's table "What each permission is for", and the ClusterRole in
  deploy/ grants exactly that set.
"""

from __future__ import annotations

import inspect
import re
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from tests.deploy.conftest import Identity, Install, mint_token
from tests.deploy.manifests import REPO
from tests.e2e import test_exposure, test_lifecycle

# (API group, resource, verb); the core group is "".
Permission = tuple[str, str, str]


def _through_k8sailor(module: Any) -> dict[str, Any]:
    """The module's tests that talk to k8sailor through the `k8sailor` fixture, and the
    module's own fixtures they ask for."""
    found: dict[str, Any] = {}
    for name, test in vars(module).items():
        if not name.startswith("test_"):
            continue
        parameters = inspect.signature(test).parameters
        if "k8sailor" not in parameters:
            continue
        found[name] = test
        found |= {p: vars(module)[p] for p in parameters if p in vars(module)}
    return found


# Collected again in this module, where `k8sailor` is a client of the pod-like server.
for _module in (test_exposure, test_lifecycle):
    globals().update(_through_k8sailor(_module))


def documented_permissions() -> set[Permission]:
    """README.md's table of k8sailor's own permissions: group, resource, verbs, why."""
    text = (REPO / "README.md").read_text()
    section = text.split("### What each permission is for", 1)[1].split("\n#", 1)[0]
    permissions: set[Permission] = set()
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not cells[0].startswith("`"):
            continue
        (group,) = re.findall(r"`([^`]*)`", cells[0])
        resources = re.findall(r"`([^`]+)`", cells[1])
        verbs = re.findall(r"`([^`]+)`", cells[2])
        group = "" if group == '""' else group
        permissions |= {(group, r, v) for r in resources for v in verbs}
    assert permissions, "README.md has no table under 'What each permission is for'"
    return permissions


def granted(rules: list[dict[str, Any]]) -> set[Permission]:
    result: set[Permission] = set()
    for rule in rules:
        assert "resourceNames" not in rule, rule
        assert "nonResourceURLs" not in rule, rule
        result |= {
            (group, resource, verb)
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]
        }
    return result


def test_the_cluster_role_grants_the_documented_set(install: Install) -> None:
    assert granted(install.cluster_role()["rules"]) == documented_permissions()


# --- what the API server says to the token ----------------------------------------------------

# One row of `kubectl auth can-i --list`: resource, non-resource URLs, resource names, verb.
CanI = tuple[str, str, str, str]
_ROW = re.compile(r"^(\S*)\s+(\[[^\]]*\])\s+(\[[^\]]*\])\s+\[([^\]]*)\]$")


def can_i_list(install: Install, identity: Identity, token: str) -> set[CanI]:
    """`kubectl auth can-i --list` as the holder of `token`, one entry per verb."""
    api = identity.api_server
    # Only the token: no kubeconfig, nothing of the admin's.
    command = [
        install.kubectl[0], "--kubeconfig=/dev/null", f"--server=https://{api.host}:{api.port}",
        f"--certificate-authority={identity.directory / 'ca.crt'}", f"--token={token}",
        "auth", "can-i", "--list", "--no-headers", f"--namespace={identity.namespace}",
    ]  # fmt: skip
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    rows: set[CanI] = set()
    for line in result.stdout.splitlines():
        # A non-resource row starts with blanks: its resource column is empty.
        match = _ROW.match(line.rstrip())
        assert match is not None, f"unexpected line from kubectl auth can-i --list: {line!r}"
        resource, urls, names, verbs = match.groups()
        rows |= {(resource, urls, names, verb) for verb in verbs.split()}
    return rows


def as_can_i(permissions: set[Permission]) -> set[CanI]:
    return {
        (f"{resource}.{group}" if group else resource, "[]", "[]", verb)
        for group, resource, verb in permissions
    }


async def test_can_i_list_for_the_service_account_is_the_documented_set(
    api_client: client.ApiClient, install: Install, identity: Identity
) -> None:
    # What any authenticated identity may do (discovery, self-reviews) is the cluster's, not
    # ours: a ServiceAccount of the same namespace with no binding at all shows it.
    core = client.CoreV1Api(api_client)
    nobody = f"{install.service_account}-nobody"
    account = client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=nobody))
    await core.create_namespaced_service_account(install.namespace, account)
    nobody_token = await mint_token(api_client, install.namespace, nobody)
    baseline = can_i_list(install, identity, nobody_token)

    ours = can_i_list(install, identity, identity.token)

    assert ours - baseline == as_can_i(documented_permissions())
    assert baseline <= ours


@dataclass(frozen=True)
class Probe:
    permission: Permission
    call: Callable[
        [client.CoreV1Api, client.AppsV1Api, client.RbacAuthorizationV1Api, str], Awaitable[Any]
    ]


_PROBE = client.V1ObjectMeta(name="k8sailor-probe")
_SERVICE = client.V1Service(
    metadata=_PROBE, spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=80)])
)
_POD_SPEC = client.V1PodSpec(containers=[client.V1Container(name="probe", image="probe")])
_POD = client.V1Pod(metadata=_PROBE, spec=_POD_SPEC)
_DEPLOYMENT = client.V1Deployment(
    metadata=_PROBE,
    spec=client.V1DeploymentSpec(
        selector=client.V1LabelSelector(match_labels={"app": "probe"}),
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"app": "probe"}), spec=_POD_SPEC
        ),
    ),
)
_TOKEN = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[]))
_ADMIN_BINDING = client.V1ClusterRoleBinding(
    metadata=_PROBE,
    role_ref=client.V1RoleRef(
        api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="cluster-admin"
    ),
)
_RBAC = "rbac.authorization.k8s.io"
_ALL = "All"

# Calls a compromised k8sailor might make. Writes are dry runs: authorization is decided before
# a dry run is, so they show what the token may do without changing anything.
PROBES = [
    Probe(("", "secrets", "get"), lambda c, a, r, ns: c.read_namespaced_secret("probe", ns)),
    Probe(("", "secrets", "list"), lambda c, a, r, ns: c.list_namespaced_secret(ns)),
    Probe(("", "secrets", "list"), lambda c, a, r, ns: c.list_secret_for_all_namespaces()),
    Probe(("", "configmaps", "get"), lambda c, a, r, ns: c.read_namespaced_config_map("x", ns)),
    Probe(("", "pods", "list"), lambda c, a, r, ns: c.list_namespaced_pod(ns)),
    Probe(
        ("", "pods", "create"),
        lambda c, a, r, ns: c.create_namespaced_pod(ns, _POD, dry_run=_ALL),
    ),
    Probe(("", "namespaces", "list"), lambda c, a, r, ns: c.list_namespace()),
    Probe(
        ("", "serviceaccounts/token", "create"),
        lambda c, a, r, ns: c.create_namespaced_service_account_token(
            "default", ns, _TOKEN, dry_run=_ALL
        ),
    ),
    Probe(("", "services", "get"), lambda c, a, r, ns: c.read_namespaced_service("probe", ns)),
    Probe(("", "services", "list"), lambda c, a, r, ns: c.list_namespaced_service(ns)),
    Probe(
        ("", "services", "create"),
        lambda c, a, r, ns: c.create_namespaced_service(ns, _SERVICE, dry_run=_ALL),
    ),
    Probe(
        ("", "services", "update"),
        lambda c, a, r, ns: c.replace_namespaced_service(
            "k8sailor-probe", ns, _SERVICE, dry_run=_ALL
        ),
    ),
    Probe(
        ("", "services", "delete"),
        lambda c, a, r, ns: c.delete_namespaced_service("k8sailor-probe", ns, dry_run=_ALL),
    ),
    Probe(
        ("apps", "deployments", "get"),
        lambda c, a, r, ns: a.read_namespaced_deployment("k8sailor-probe", ns),
    ),
    Probe(("apps", "deployments", "list"), lambda c, a, r, ns: a.list_namespaced_deployment(ns)),
    Probe(
        ("apps", "deployments", "create"),
        lambda c, a, r, ns: a.create_namespaced_deployment(ns, _DEPLOYMENT, dry_run=_ALL),
    ),
    Probe(
        ("apps", "deployments", "delete"),
        lambda c, a, r, ns: a.delete_namespaced_deployment("k8sailor-probe", ns, dry_run=_ALL),
    ),
    Probe(
        (_RBAC, "clusterrolebindings", "create"),
        lambda c, a, r, ns: r.create_cluster_role_binding(_ADMIN_BINDING, dry_run=_ALL),
    ),
]


@pytest.fixture
async def as_k8sailor(identity: Identity) -> AsyncIterator[client.ApiClient]:
    """An API client holding k8sailor's token and the cluster CA, nothing else."""
    configuration = client.Configuration(
        host=f"https://{identity.api_server.host}:{identity.api_server.port}"
    )
    configuration.ssl_ca_cert = str(identity.directory / "ca.crt")
    configuration.api_key["BearerToken"] = f"Bearer {identity.token}"
    async with client.ApiClient(configuration) as api:
        yield api


async def test_the_token_may_do_the_documented_set_and_nothing_else(
    as_k8sailor: client.ApiClient, namespace: str
) -> None:
    core, apps = client.CoreV1Api(as_k8sailor), client.AppsV1Api(as_k8sailor)
    rbac = client.RbacAuthorizationV1Api(as_k8sailor)
    documented = documented_permissions()
    outcomes: dict[str, tuple[Permission, int]] = {}
    for number, probe in enumerate(PROBES):
        try:
            await probe.call(core, apps, rbac, namespace)
            status = 200
        except ApiException as error:
            status = error.status
        outcomes[f"probe {number}"] = (probe.permission, status)
    refused = {permission for permission, status in outcomes.values() if status == 403}
    probed = {permission for permission, _ in outcomes.values()}
    assert refused == probed - documented, outcomes
    assert probed - documented, "no probe outside the documented set"
