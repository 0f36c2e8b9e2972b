"""The server's configuration: every bad value is one ConfigError naming where it came from."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import ConfigError, ServerConfig, load
from server.rules import ExternalNamePolicy, NodePortRange


def test_defaults_need_no_flags_and_no_environment() -> None:
    config = load([], {})
    assert config == ServerConfig()
    assert config.max_in_flight == 32
    assert config.settings.max_rules == 256


def test_a_flag_wins_over_the_environment_which_wins_over_the_default() -> None:
    env = {"K8SAILOR_MAX_CONCURRENCY": "64", "K8SAILOR_MAX_RULES": "100"}
    config = load(["--max-concurrency", "8"], env)
    assert config.max_in_flight == 8
    assert config.max_rules == 100
    assert load(["--node-port-range", "20000-20100"], {}).node_ports == NodePortRange(20000, 20100)
    assert load([], {"K8SAILOR_LOG_LEVEL": "debug"}).log_level == "DEBUG"


def test_the_deployment_cache_watches_everywhere_unless_told_otherwise() -> None:
    assert (load([], {}).deployment_cache, load([], {}).watch_namespaces) == ("watch", ())
    config = load(["--deployment-cache", "off", "--watch-namespaces", "team-a, team-b"], {})
    assert (config.deployment_cache, config.watch_namespaces) == ("off", ("team-a", "team-b"))


def test_the_concurrency_limit_adapts_unless_told_to_stay_fixed() -> None:
    assert load([], {}).concurrency_limit == "adaptive"
    assert load(["--concurrency-limit", "fixed"], {}).concurrency_limit == "fixed"
    assert load([], {"K8SAILOR_CONCURRENCY_LIMIT": "Fixed"}).concurrency_limit == "fixed"
    with pytest.raises(ConfigError, match="--concurrency-limit: 'vegas' is not one of"):
        load(["--concurrency-limit", "vegas"], {})


def test_the_server_runs_on_uvloop_unless_told_to_use_asyncio() -> None:
    assert load([], {}).event_loop == "uvloop"
    assert load([], {"K8SAILOR_EVENT_LOOP": "AsyncIO"}).event_loop == "asyncio"
    with pytest.raises(ConfigError, match="--event-loop: 'trio' is not one of uvloop, asyncio"):
        load(["--event-loop", "trio"], {})


def test_external_names_follow_the_cluster_domain_and_the_allowed_suffixes() -> None:
    assert load([], {}).settings.external_names == ExternalNamePolicy("cluster.local", ())
    config = load(
        [
            "--cluster-domain",
            "Corp.Cluster.",
            "--allow-external-name",
            ".svc.corp.cluster",
            "--allow-external-name",
            "db.internal, Cache.Internal.",
        ],
        {"K8SAILOR_ALLOW_EXTERNAL_NAME": "ignored.example"},
    )
    assert config.settings.external_names == ExternalNamePolicy(
        "corp.cluster", ("svc.corp.cluster", "db.internal", "cache.internal")
    )
    from_env = load(
        [], {"K8SAILOR_ALLOW_EXTERNAL_NAME": "a.local,b.local", "K8SAILOR_CLUSTER_DOMAIN": "k8s"}
    )
    assert from_env.settings.external_names == ExternalNamePolicy("k8s", ("a.local", "b.local"))


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {"K8SAILOR_MAX_CONCURRENCY": "abc"}, "K8SAILOR_MAX_CONCURRENCY: 'abc' is not a whole"),
        (["--max-concurrency", "0"], {}, "--max-concurrency: 0 is outside 1-10000"),
        (["--max-rules", "-3"], {}, "--max-rules: -3 is outside 1-10000"),
        (["--log-level", "verbose"], {}, "--log-level: 'VERBOSE' is not one of DEBUG, INFO"),
        (["--grace", "nan"], {}, "--grace: nan is not a finite number of seconds"),
        (["--grace", "soon"], {}, "--grace: 'soon' is not a number of seconds"),
        (["--max-retry-seconds", "-1"], {}, "--max-retry-seconds: -1.0 is not a finite number"),
        (["--listen", "50051"], {}, "--listen: '50051' is not HOST:PORT"),
        (["--listen", "localhost:99999"], {}, "--listen: 'localhost:99999' is not HOST:PORT"),
        # gRPC would take it for a Unix socket, whose callers the edge takes for the mesh's.
        (
            ["--listen", "unix:/tmp/k8sailor.sock:1"],
            {},
            "--listen: 'unix:/tmp/k8sailor.sock:1' is not HOST:PORT: a Unix socket is only for",
        ),
        (
            [],
            {"K8SAILOR_NODE_PORT_RANGE": "a-b"},
            "K8SAILOR_NODE_PORT_RANGE: node port range 'a-b'",
        ),
        (["--deployment-cache", "maybe"], {}, "--deployment-cache: 'maybe' is not one of watch"),
        (
            ["--cluster-domain", "cluster_local"],
            {},
            '--cluster-domain: "cluster_local" is not a lowercase DNS-1123 subdomain: it contains',
        ),
        (
            ["--allow-external-name", "svc.cluster.local", "--allow-external-name", "10.0.0.1"],
            {},
            '--allow-external-name: "10.0.0.1" ends in a label that starts with a digit, which '
            "reads as an IP address; IP addresses are never allowed as ExternalName targets",
        ),
        (
            [],
            {"K8SAILOR_ALLOW_EXTERNAL_NAME": "ok.example,a..b"},
            'K8SAILOR_ALLOW_EXTERNAL_NAME: "a..b" is not a lowercase DNS-1123 subdomain',
        ),
        (
            [],
            {"K8SAILOR_WATCH_NAMESPACES": "team-a,Team_B"},
            "K8SAILOR_WATCH_NAMESPACES: 'Team_B' is not a namespace name",
        ),
    ],
)
def test_a_bad_value_names_its_source_and_the_problem(
    argv: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load(argv, env)
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)


def test_an_unreadable_kubeconfig_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--kubeconfig: cannot read .*/missing: No such file"):
        load(["--kubeconfig", str(tmp_path / "missing")], {})
    with pytest.raises(ConfigError, match=r"^--kubeconfig: cannot read .*: Is a directory"):
        load([], {"K8SAILOR_KUBECONFIG": str(tmp_path)})


def test_a_config_built_in_code_is_checked_too() -> None:
    with pytest.raises(ConfigError, match="--max-concurrency: 0 is outside 1-10000"):
        ServerConfig(max_in_flight=0)
    with pytest.raises(ConfigError, match="--grace: -1"):
        ServerConfig(grace=-1)


def test_help_works_whatever_the_environment_says(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        load(["--help"], {"K8SAILOR_MAX_CONCURRENCY": "abc", "K8SAILOR_LOG_LEVEL": "verbose"})
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "--max-concurrency N" in out
    assert "$K8SAILOR_MAX_CONCURRENCY" in out


def test_an_unknown_flag_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        load(["--max-concurency", "3"], {})
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "unrecognized arguments: --max-concurency 3" in err
