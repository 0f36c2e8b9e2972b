"""The TLS, identity and authorization flags of k8sailor-server, as server.config reads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.auth.settings import Authorization
from server.config import ConfigError, load


@pytest.fixture
def files(tmp_path: Path) -> tuple[str, str, str]:
    paths = [tmp_path / name for name in ("tls.crt", "tls.key", "ca.crt")]
    for path in paths:
        path.write_text("x")
    return str(paths[0]), str(paths[1]), str(paths[2])


def test_tls_flags_turn_on_rbac_and_mutual_tls(files: tuple[str, str, str]) -> None:
    cert, key, ca = files
    config = load(
        ["--listen", "0.0.0.0:50051", "--tls-cert-file", cert, "--tls-private-key-file", key,
         "--client-ca-file", ca, "--token-audience", "k8sailor, vault"],
        environ={},
    )  # fmt: skip
    auth = config.auth
    assert (auth.tls_cert_file, auth.tls_private_key_file) == (Path(cert), Path(key))
    assert auth.client_ca_file == Path(ca)
    assert auth.mode is Authorization.RBAC
    assert auth.token_audiences == ("k8sailor", "vault")


def test_the_same_from_the_environment_and_switches_with_or_without_a_value(
    files: tuple[str, str, str],
) -> None:
    cert, key, _ = files
    environ = {
        "K8SAILOR_TLS_CERT_FILE": cert,
        "K8SAILOR_TLS_PRIVATE_KEY_FILE": key,
        "K8SAILOR_AUTHORIZATION": "none",
        "K8SAILOR_TRUST_FORWARDED_CLIENT_CERT": "no",
    }
    config = load(["--listen", "0.0.0.0:1", "--insecure"], environ=environ)
    assert config.auth.tls
    assert config.auth.mode is Authorization.NONE
    assert not config.auth.trust_forwarded_client_cert
    assert config.auth.insecure
    assert not load(["--insecure=false"], environ={}).auth.insecure


def test_the_mesh_socket_and_trust_domains_from_flags_or_the_environment(tmp_path: Path) -> None:
    socket = tmp_path / "mesh.sock"
    config = load(
        ["--mesh-listen", f"unix://{socket}", "--spiffe-trust-domain", "cluster.local",
         "--spiffe-trust-domain", "east.example,west.example"],
        environ={"K8SAILOR_SPIFFE_TRUST_DOMAIN": "ignored.example"},
    )  # fmt: skip
    assert config.auth.mesh_listen == socket
    assert config.auth.mode is Authorization.RBAC
    assert config.auth.spiffe_trust_domains == ("cluster.local", "east.example", "west.example")
    environ = {"K8SAILOR_MESH_LISTEN": f"unix:{socket}", "K8SAILOR_SPIFFE_TRUST_DOMAIN": "a, b"}
    from_env = load([], environ=environ).auth
    assert (from_env.mesh_listen, from_env.spiffe_trust_domains) == (socket, ("a", "b"))
    assert load([], environ={}).auth.spiffe_trust_domains == ("cluster.local",)


def test_the_old_loopback_switch_no_longer_starts_a_server() -> None:
    # It used to believe x-forwarded-client-cert from any loopback peer.
    with pytest.raises(ConfigError, match=r"give --mesh-listen unix:PATH"):
        load(["--trust-forwarded-client-cert"], environ={})


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["--authorization", "maybe"], {}, "--authorization: 'maybe' is not one of rbac, none"),
        ([], {"K8SAILOR_INSECURE": "perhaps"}, "K8SAILOR_INSECURE: 'perhaps' is neither true"),
        (["--token-audience", "a,,b"], {}, "--token-audience: an audience is empty"),
        (["--listen", "0.0.0.0:1"], {}, "--listen 0.0.0.0:1 is reachable from other hosts"),
        (["--authorization", "rbac"], {}, "--authorization=rbac needs a way to tell callers"),
        (["--tls-cert-file", "/no/such.crt"], {}, "--tls-cert-file and --tls-private-key-file"),
        (["--mesh-listen", "0.0.0.0:15006"], {}, "--mesh-listen: '0.0.0.0:15006' is not unix:"),
        ([], {"K8SAILOR_SPIFFE_TRUST_DOMAIN": "a,,b"}, "K8SAILOR_SPIFFE_TRUST_DOMAIN: a trust"),
        (["--spiffe-trust-domain", "Td"], {}, "--spiffe-trust-domain: 'Td' is not a SPIFFE"),
    ],
)
def test_bad_auth_settings_are_one_line_naming_the_flag(
    argv: list[str], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load(argv, environ=environ)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)
