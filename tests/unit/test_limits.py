"""Hostile input is cheap to refuse: size limits before parsing, and work in slices."""

from __future__ import annotations

import asyncio
import time

import pytest

from server.domain.cooperative import SLICE_SECONDS, in_slices
from server.manifests import ContainerPort, Deployment, build_services
from server.rules import (
    MAX_PORTS,
    MAX_RULE_LENGTH,
    PortRule,
    Protocol,
    RuleError,
    ServiceRule,
    ServiceType,
    check_rule,
    parse_rule,
    port_names,
)


def _ports(n: int, start: int = 1000) -> str:
    return ",".join(str(start + i) for i in range(n))


def test_a_rule_of_max_ports_is_accepted_and_one_more_is_refused_at_that_port() -> None:
    assert len(parse_rule(_ports(MAX_PORTS), 0).ports) == MAX_PORTS
    text = _ports(MAX_PORTS + 1)
    with pytest.raises(RuleError) as raised:
        parse_rule(text, 4)
    error = raised.value
    assert error.column == text.index(str(1000 + MAX_PORTS)) + 1
    assert str(error).endswith(
        f"the rule has {MAX_PORTS + 1} ports; a rule may have at most {MAX_PORTS} ports: "
        "split it into several rules"
    )
    assert error.index == 4


def test_a_rule_of_max_length_is_read_and_a_longer_one_is_refused_unread() -> None:
    padded = " " * (MAX_RULE_LENGTH - 2) + "80"
    assert parse_rule(padded, 0).ports[0].port == 80
    huge = "8" * (4 * 1024 * 1024)
    with pytest.raises(RuleError) as raised:
        parse_rule(huge, 2)
    error = raised.value
    assert error.column == MAX_RULE_LENGTH + 1
    assert f"a rule may be at most {MAX_RULE_LENGTH} characters" in error.message
    assert f"the rule is {len(huge)} characters long" in error.message
    # The result quotes the rule back: a bounded excerpt, not four megabytes.
    assert len(error.text) < 100
    assert error.text.endswith("…")


def test_commas_alone_count_as_ports() -> None:
    with pytest.raises(RuleError, match=f"at most {MAX_PORTS} ports"):
        parse_rule("," * 1000, 0)


def test_a_structured_rule_with_too_many_ports_is_refused_with_a_bounded_text() -> None:
    rule = ServiceRule(ServiceType.CLUSTER_IP, tuple(PortRule(p, p) for p in range(1, 20_001)))
    with pytest.raises(RuleError) as raised:
        check_rule(rule, 1)
    assert raised.value.where == f"ports[{MAX_PORTS}]"
    assert "the rule has 20000 ports" in raised.value.message
    assert raised.value.text == "<a rule of 20000 ports>"


def test_a_structured_rule_with_a_huge_field_is_quoted_back_in_brief() -> None:
    rule = ServiceRule(ServiceType.CLUSTER_IP, (PortRule(80, 80, app_protocol="x" * 1_000_000),))
    with pytest.raises(RuleError) as raised:
        check_rule(rule, 0)
    assert len(raised.value.text) < 100
    assert len(str(raised.value)) < 1000


def test_port_names_with_many_shared_numbers() -> None:
    text = ",".join(f"{1000 + i // 2}/{'udp' if i % 2 else 'tcp'}" for i in range(MAX_PORTS))
    names = port_names(parse_rule(text, 0))
    assert names[:2] == ("1000-1000-tcp", "1000-1000-udp")
    assert len(set(names)) == MAX_PORTS


def test_the_fast_path_still_hands_clashes_to_the_grammar_to_explain() -> None:
    with pytest.raises(RuleError, match="port 1005/TCP appears twice"):
        parse_rule(_ports(200) + ",1005", 0)
    with pytest.raises(RuleError, match="node port 30001 is already used by port 80"):
        parse_rule("!30001:80:80,30002:81:81,30001:82:82", 0)
    # One node port for one port number over two protocols is what the apiserver allows.
    assert len(parse_rule("!30001:53:53,30001:53:53/udp", 0).ports) == 2


def test_named_targets_resolve_against_many_container_ports() -> None:
    container_ports = tuple(ContainerPort(f"p{i}", 1 + i, Protocol.TCP) for i in range(1000))
    deployment = Deployment("web", "default", "uid-1", {"app": "web"}, container_ports)
    text = ",".join(f"{1000 + i}:p{999 - i}" for i in range(MAX_PORTS))
    (manifest,) = build_services([parse_rule(text, 0)], deployment)
    assert not isinstance(manifest, RuleError)
    assert manifest["spec"]["ports"][0]["targetPort"] == "p999"
    missing = "80:p1000"
    (error,) = build_services([parse_rule(missing, 0)], deployment)
    assert isinstance(error, RuleError)
    assert 'no container port named "p1000"' in error.message


async def test_in_slices_lets_other_tasks_run_during_long_work() -> None:
    ran_between: list[int] = []

    async def other() -> None:
        while True:
            ran_between.append(len(done))
            await asyncio.sleep(0)

    done: list[int] = []

    def work(i: int) -> int:
        end = time.perf_counter() + SLICE_SECONDS  # busy, as parsing is
        while time.perf_counter() < end:
            pass
        done.append(i)
        return i

    task = asyncio.create_task(other())
    await asyncio.sleep(0)
    result = await in_slices(work(i) for i in range(20))
    task.cancel()
    assert result == list(range(20))
    # The other task ran while the items were being worked on, not only before or after.
    assert any(0 < seen < 20 for seen in ran_between)
