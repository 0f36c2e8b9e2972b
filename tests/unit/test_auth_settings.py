"""Which transport and access settings may be served where, and token helpers (pure)."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest

from server.auth.cache import ReviewCache, Timed
from server.auth.settings import Authorization, AuthSettings, is_loopback, mesh_socket
from server.auth.tokens import token_expiry, token_problem


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {name: tmp_path / name for name in ("tls.crt", "tls.key", "ca.crt")}
    for path in paths.values():
        path.write_text("x")
    return paths


def test_defaults_are_loopback_plaintext_without_authorization() -> None:
    settings = AuthSettings()
    assert (settings.tls, settings.mode) == (False, Authorization.NONE)
    assert settings.problems("127.0.0.1:50051") == []


def test_tls_makes_rbac_the_default(files: dict[str, Path]) -> None:
    settings = AuthSettings(tls_cert_file=files["tls.crt"], tls_private_key_file=files["tls.key"])
    assert settings.mode is Authorization.RBAC
    assert settings.problems("0.0.0.0:50051") == []


@pytest.mark.parametrize(
    ("listen", "loopback"),
    [("127.0.0.1:1", True), ("[::1]:1", True), ("localhost:1", True), ("0.0.0.0:1", False),
     ("[::]:1", False), (":1", False), ("k8sailor.example:1", False), ("10.1.2.3:1", False)],
)  # fmt: skip
def test_loopback_addresses(listen: str, loopback: bool) -> None:
    assert is_loopback(listen) is loopback


def test_each_bad_combination_is_named(files: dict[str, Path], tmp_path: Path) -> None:
    settings = AuthSettings(
        tls_cert_file=files["tls.crt"],
        client_ca_file=tmp_path / "missing.crt",
        token_audiences=(),
    )
    assert settings.problems("127.0.0.1:1") == [
        "--tls-cert-file and --tls-private-key-file go together: give both or neither",
        f"--client-ca-file {tmp_path / 'missing.crt'}: no such file",
        "--token-audience: give at least one non-empty audience",
    ]


def test_rbac_needs_a_way_to_identify_callers(tmp_path: Path) -> None:
    (problem,) = AuthSettings(authorization=Authorization.RBAC).problems("127.0.0.1:1")
    assert problem.startswith("--authorization=rbac needs a way to tell callers apart")
    sidecar = AuthSettings(authorization=Authorization.RBAC, mesh_listen=tmp_path / "m.sock")
    assert sidecar.problems("127.0.0.1:1") == []


def test_the_old_loopback_switch_alone_is_refused_and_points_at_the_mesh_socket() -> None:
    old = AuthSettings(authorization=Authorization.RBAC, trust_forwarded_client_cert=True)
    assert old.problems("127.0.0.1:1") == [
        "--trust-forwarded-client-cert no longer believes x-forwarded-client-cert from "
        "loopback (kubectl port-forward and every container of the pod arrive there too): "
        "give --mesh-listen unix:PATH, a socket only the mesh sidecar reaches, the one place "
        "the header is believed",
        "--authorization=rbac needs a way to tell callers apart: serve TLS (--tls-cert-file, "
        "--tls-private-key-file) or listen for a mesh sidecar (--mesh-listen unix:PATH)",
    ]


def test_beside_the_mesh_socket_the_old_switch_is_a_warning(tmp_path: Path) -> None:
    both = AuthSettings(mesh_listen=tmp_path / "m.sock", trust_forwarded_client_cert=True)
    assert both.problems("127.0.0.1:1") == []
    assert both.warnings("127.0.0.1:1") == [
        "--trust-forwarded-client-cert is deprecated and does nothing: x-forwarded-client-cert "
        "is believed on --mesh-listen only; drop the flag"
    ]


def test_the_mesh_socket_makes_rbac_the_default_and_none_needs_insecure(tmp_path: Path) -> None:
    socket = tmp_path / "m.sock"
    assert AuthSettings(mesh_listen=socket).mode is Authorization.RBAC
    open_mesh = AuthSettings(mesh_listen=socket, authorization=Authorization.NONE)
    (problem,) = open_mesh.problems("127.0.0.1:1")
    assert problem == (
        f"--mesh-listen unix:{socket} is reached from other hosts through the mesh sidecar, "
        "and --authorization=none would let any caller create any Service: use "
        "--authorization=rbac, or --insecure to do it anyway"
    )
    insecure = AuthSettings(mesh_listen=socket, authorization=Authorization.NONE, insecure=True)
    assert insecure.problems("127.0.0.1:1") == []
    assert insecure.warnings("127.0.0.1:1") == [
        f"--insecure: any caller the mesh sidecar forwards to unix:{socket} is authorized"
    ]


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("unix:/var/run/k8sailor/mesh.sock", "/var/run/k8sailor/mesh.sock"),
        ("unix:///var/run/k8sailor/mesh.sock", "/var/run/k8sailor/mesh.sock"),
        (" unix:/m.sock ", "/m.sock"),
    ],
)
def test_the_mesh_socket_is_a_unix_path(text: str, path: str) -> None:
    assert mesh_socket(text) == Path(path)
    assert mesh_socket("") is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("127.0.0.1:15006", "is not unix:PATH: the mesh listener is a Unix socket, never a TCP"),
        ("unix:mesh.sock", "the socket's path must be absolute"),
        ("unix-abstract:mesh", "an abstract socket is reachable by every container of the pod"),
    ],
)
def test_anything_but_a_socket_file_is_refused_for_the_mesh(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        mesh_socket(text)


def test_a_mesh_socket_that_cannot_be_made_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "m.sock"
    long = tmp_path / ("x" * 120) / "m.sock"
    file = tmp_path / "a-file"
    file.write_text("x")
    assert [
        problem
        for path in (missing, long, file)
        for problem in AuthSettings(mesh_listen=path).problems("127.0.0.1:1")
    ] == [
        f"--mesh-listen unix:{missing}: directory {missing.parent} does not exist (mount the "
        "shared volume)",
        f"--mesh-listen unix:{long}: the path is longer than the 107 bytes a Unix socket's "
        "path may have",
        f"--mesh-listen unix:{file}: {file} exists and is not a socket",
    ]


def test_spiffe_trust_domains_are_checked() -> None:
    assert AuthSettings().spiffe_trust_domains == ("cluster.local",)
    assert AuthSettings(spiffe_trust_domains=()).problems("127.0.0.1:1") == [
        "--spiffe-trust-domain: give at least one trust domain"
    ]
    (problem,) = AuthSettings(spiffe_trust_domains=("ok.example", "Bad/")).problems("127.0.0.1:1")
    assert problem.startswith("--spiffe-trust-domain: 'Bad/' is not a SPIFFE trust domain name")


def test_a_client_ca_needs_tls(files: dict[str, Path]) -> None:
    assert AuthSettings(client_ca_file=files["ca.crt"]).problems("127.0.0.1:1") == [
        "--client-ca-file needs --tls-cert-file and --tls-private-key-file"
    ]


def _jwt(claims: dict[str, object]) -> str:
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"eyJhbGciOiJSUzI1NiJ9.{payload}.c2ln"


def test_token_expiry_reads_exp_and_nothing_else() -> None:
    assert token_expiry(_jwt({"exp": 1700000000, "sub": "x"})) == 1700000000.0
    assert token_expiry(_jwt({"sub": "x"})) is None
    assert token_expiry("opaque-bootstrap-token") is None
    assert token_expiry("a.!!!.c") is None


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("", "is empty"),
        ("x" * 8193, "is 8193 bytes, more than the 8192 any Kubernetes token has"),
        ("two words", "has characters no token has"),
        ("caf\u00e9", "has characters no token has"),
    ],
)
def test_impossible_tokens_are_refused_before_review(token: str, problem: str) -> None:
    found = token_problem(token)
    assert found is not None
    assert found.startswith(problem)


async def test_concurrent_misses_share_one_review_and_answers_expire() -> None:
    now = [100.0]
    cache: ReviewCache[str, str] = ReviewCache(max_entries=2, clock=lambda: now[0])
    reviews = 0
    gate = asyncio.Event()

    async def review() -> Timed[str]:
        nonlocal reviews
        reviews += 1
        await gate.wait()
        return Timed(f"answer {reviews}", ttl=10)

    waiting = [asyncio.ensure_future(cache.get("k", review)) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiting) == ["answer 1"] * 5
    assert await cache.get("k", review) == "answer 1"
    now[0] += 10
    assert await cache.get("k", review) == "answer 2"
    assert reviews == 2


async def test_the_cache_is_bounded_and_does_not_keep_unanswered_reviews() -> None:
    cache: ReviewCache[str, str] = ReviewCache(max_entries=2)

    async def answer(value: str, ttl: float = 60) -> Timed[str]:
        return Timed(value, ttl)

    for key in "abc":
        await cache.get(key, lambda key=key: answer(key))  # type: ignore[misc]
    assert len(cache) == 2
    await cache.get("d", lambda: answer("d", ttl=0))
    assert len(cache) == 2

    async def failing() -> Timed[str]:
        raise RuntimeError("API server unreachable")

    with pytest.raises(RuntimeError):
        await cache.get("e", failing)
    assert await cache.get("e", lambda: answer("later")) == "later"


def test_cached_answers_are_there_without_awaiting_and_only_while_current() -> None:
    now = [0.0]
    cache: ReviewCache[str, str] = ReviewCache(max_entries=4, clock=lambda: now[0])
    cache._store("k", Timed("yes", ttl=5))
    assert cache.cached("k") == "yes"
    assert cache.cached("other") is None
    now[0] = 5.0
    assert cache.cached("k") is None
