"""server.rules: text rules and structured specs to one model, and the errors for the rest."""

from __future__ import annotations

import dataclasses
import ipaddress
import pickle
import re
import socket

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from server.rules import (
    DEFAULT_NODE_PORTS,
    ExternalNamePolicy,
    NodePortRange,
    PortRule,
    Protocol,
    RuleError,
    ServiceRule,
    ServiceType,
    check_rule,
    locate,
    parse_rule,
    port_names,
)
from server.rules.targets import _inet_aton
from tests.unit.conftest import relaxed, rule_like_text, service_rules

CI = ServiceType.CLUSTER_IP
HL = ServiceType.HEADLESS
NP = ServiceType.NODE_PORT
LB = ServiceType.LOAD_BALANCER
EN = ServiceType.EXTERNAL_NAME
TCP, UDP, SCTP = Protocol.TCP, Protocol.UDP, Protocol.SCTP


def one(rtype: ServiceType, *ports: PortRule, name: str | None = None) -> ServiceRule:
    return ServiceRule(rtype, ports, name)


# (text as a caller writes it, the model, its canonical text)
ACCEPTED: list[tuple[str, ServiceRule, str]] = [
    # The rows of the table.
    ("80", one(CI, PortRule(80, 80)), "80"),
    ("80:8088", one(CI, PortRule(80, 8088)), "80:8088"),
    ("#80:80", one(HL, PortRule(80, 80)), "#80"),
    ("!80:8088", one(NP, PortRule(80, 8088)), "!80:8088"),
    ("!31234:80:8088", one(NP, PortRule(80, 8088, node_port=31234)), "!31234:80:8088"),
    ("@db.example.com", ServiceRule(EN, external_name="db.example.com"), "@db.example.com"),
    ("^80:8080", one(LB, PortRule(80, 8080)), "^80:8080"),
    ("^31000:80:8080", one(LB, PortRule(80, 8080, node_port=31000)), "^31000:80:8080"),
    ("80:http", one(CI, PortRule(80, "http")), "80:http"),
    ("53:53/udp", one(CI, PortRule(53, 53, UDP)), "53/udp"),
    ("9:9/sctp", one(CI, PortRule(9, 9, SCTP)), "9/sctp"),
    ("80:8080/tcp", one(CI, PortRule(80, 8080)), "80:8080"),
    ("80:8080/grpc", one(CI, PortRule(80, 8080, app_protocol="grpc")), "80:8080/grpc"),
    ("80:8080/http", one(CI, PortRule(80, 8080, app_protocol="http")), "80:8080/http"),
    ("80:8080/http2", one(CI, PortRule(80, 8080, app_protocol="http2")), "80:8080/http2"),
    ("443:8443/https", one(CI, PortRule(443, 8443, app_protocol="https")), "443:8443/https"),
    (
        "80:8080/h2c",
        one(CI, PortRule(80, 8080, app_protocol="kubernetes.io/h2c")),
        "80:8080/h2c",
    ),
    ("80:8080/ws", one(CI, PortRule(80, 8080, app_protocol="kubernetes.io/ws")), "80:8080/ws"),
    (
        "80:8080,443:8443",
        one(CI, PortRule(80, 8080), PortRule(443, 8443)),
        "80:8080,443:8443",
    ),
    (
        "!80:8080,443:8443",
        one(NP, PortRule(80, 8080), PortRule(443, 8443)),
        "!80:8080,443:8443",
    ),
    ("admin=!80:9090", one(NP, PortRule(80, 9090), name="admin"), "admin=!80:9090"),
    # Whitespace around tokens.
    (" admin = ! 80 : 9090 ", one(NP, PortRule(80, 9090), name="admin"), "admin=!80:9090"),
    ("\t80 : 8088\n", one(CI, PortRule(80, 8088)), "80:8088"),
    (
        " 80 : 8080 / udp / quic , 443 ",
        one(CI, PortRule(80, 8080, UDP, app_protocol="quic"), PortRule(443, 443)),
        "80:8080/udp/quic,443",
    ),
    ("@ db.example.com ", ServiceRule(EN, external_name="db.example.com"), "@db.example.com"),
    # One port number over two protocols; one node port may serve both.
    (
        "53/udp,53/tcp",
        one(CI, PortRule(53, 53, UDP), PortRule(53, 53, TCP)),
        "53/udp,53",
    ),
    (
        "!30053:53:53/udp,30053:53:53",
        one(NP, PortRule(53, 53, UDP, node_port=30053), PortRule(53, 53, node_port=30053)),
        "!30053:53:53/udp,30053:53:53",
    ),
    # Protocol spellings.
    ("80/UDP", one(CI, PortRule(80, 80, UDP)), "80/udp"),
    ("80/GRPC", one(CI, PortRule(80, 80, app_protocol="grpc")), "80/grpc"),
    ("80/tcp/upd", one(CI, PortRule(80, 80, app_protocol="upd")), "80/tcp/upd"),
    ("80/tcp/tcp", one(CI, PortRule(80, 80, app_protocol="tcp")), "80/tcp/tcp"),
    ("80/udp/grpc", one(CI, PortRule(80, 80, UDP, app_protocol="grpc")), "80/udp/grpc"),
    (
        "80/example.com/My_Proto",
        one(CI, PortRule(80, 80, app_protocol="example.com/My_Proto")),
        "80/example.com/My_Proto",
    ),
    (
        "80/kubernetes.io/h2c",
        one(CI, PortRule(80, 80, app_protocol="kubernetes.io/h2c")),
        "80/h2c",
    ),
    (
        "80/tcp/udp/x",
        one(CI, PortRule(80, 80, app_protocol="udp/x")),
        "80/tcp/udp/x",
    ),
    # Explicit port names (our extension).
    (
        "80:8080(web), 443:8443 (tls)",
        one(CI, PortRule(80, 8080, name="web"), PortRule(443, 8443, name="tls")),
        "80:8080(web),443:8443(tls)",
    ),
    # Odd but unambiguous spellings.
    ("0080:08080", one(CI, PortRule(80, 8080)), "80:8080"),
    ("80:80", one(CI, PortRule(80, 80)), "80"),
    ("!30000:1:65535", one(NP, PortRule(1, 65535, node_port=30000)), "!30000:1:65535"),
    ("^32767:65535:1", one(LB, PortRule(65535, 1, node_port=32767)), "^32767:65535:1"),
    ("!31234:80:80", one(NP, PortRule(80, 80, node_port=31234)), "!31234:80:80"),
    (
        "db=@db.example.com",
        ServiceRule(EN, name="db", external_name="db.example.com"),
        "db=@db.example.com",
    ),
    ("x=#80:a-1", one(HL, PortRule(80, "a-1"), name="x"), "x=#80:a-1"),
]


@pytest.mark.parametrize(("text", "model", "canonical"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_accepted_rule_gives_model_and_canonical_text(
    text: str, model: ServiceRule, canonical: str
) -> None:
    rule = parse_rule(text, 0)
    assert rule == model
    assert rule.canonical() == canonical
    assert parse_rule(canonical, 0) == model
    # A rule from text passes the structured checks unchanged: the same checks apply.
    assert check_rule(rule, 0) == rule


# (text, column, message). Each message names the bad token and says what is wrong.
REFUSED: list[tuple[str, int, str]] = [
    ("", 1, "the rule is empty"),
    ("   ", 1, "the rule is empty"),
    ("#!80", 2, "two type prefixes '#' and '!'; a rule has one type, so at most one prefix"),
    ("! ^80", 3, "two type prefixes '!' and '^'; a rule has one type, so at most one prefix"),
    (
        "#31234:80:8088",
        2,
        "node port 31234 is not allowed on a headless (#) rule; "
        "only NodePort (!) and LoadBalancer (^) rules have node ports",
    ),
    (
        "31234:80:8088",
        1,
        "node port 31234 is not allowed on a ClusterIP rule; "
        "only NodePort (!) and LoadBalancer (^) rules have node ports",
    ),
    ("0", 1, "port 0 is outside 1-65535"),
    ("65536:80", 1, "port 65536 is outside 1-65535"),
    ("80:0", 4, "target port 0 is outside 1-65535"),
    ("80:65536", 4, "target port 65536 is outside 1-65535"),
    ("!29999:80:80", 2, "node port 29999 is outside 30000-32767"),
    ("!99999:80:8080", 2, "node port 99999 is outside 30000-32767"),
    ("^32768:80:8080", 2, "node port 32768 is outside 30000-32767"),
    # Two numbers after '!' are PORT:TARGET, as in the table's !80:8088.
    ("!99999:80", 2, "port 99999 is outside 1-65535"),
    ("!31234:0:80", 8, "port 0 is outside 1-65535"),
    ("99999999999999999999:80", 1, "port 99999999999999999999 is outside 1-65535"),
    ("80:99999999999", 4, "target port 99999999999 is outside 1-65535"),
    ("80,80", 4, "port 80/TCP appears twice in this rule"),
    ("53/udp, 53:53/udp", 9, "port 53/UDP appears twice in this rule"),
    ("80:8080,80:9090/tcp", 9, "port 80/TCP appears twice in this rule"),
    (
        "!31000:80:80,31000:81:81",
        14,
        "node port 31000 is already used by port 80 of this rule",
    ),
    (
        "80:HTTP",
        4,
        'target port name "HTTP" is not a valid IANA service name: it must be lowercase',
    ),
    (
        "80:a--b",
        4,
        "target port name \"a--b\" is not a valid IANA service name: it must not contain '--'",
    ),
    (
        "80:-ab",
        4,
        'target port name "-ab" is not a valid IANA service name: '
        "it must not start or end with '-'",
    ),
    (
        "80:abcdefghijklmnop",
        4,
        'target port name "abcdefghijklmnop" is not a valid IANA service name: '
        "it is 16 characters long, more than 15",
    ),
    (
        "80:http_x",
        4,
        'target port name "http_x" is not a valid IANA service name: '
        "it contains \"_\"; only a-z, 0-9 and '-' are allowed",
    ),
    (
        "@DB.example.com",
        2,
        'external name "DB.example.com" is not a lowercase DNS-1123 subdomain: '
        "it must be lowercase",
    ),
    (
        "@db..example.com",
        2,
        'external name "db..example.com" is not a lowercase DNS-1123 subdomain: '
        "it must be dot-separated parts that start and end with a letter or digit",
    ),
    (
        "@-db.example.com",
        2,
        'external name "-db.example.com" is not a lowercase DNS-1123 subdomain: '
        "it must be dot-separated parts that start and end with a letter or digit",
    ),
    (
        "@" + "a" * 254,
        2,
        f'external name "{"a" * 40}…" is not a lowercase DNS-1123 subdomain: '
        "it is 254 characters long, more than 253",
    ),
    (
        "@db.example.com.",
        2,
        'external name "db.example.com." is not a lowercase DNS-1123 subdomain: '
        "it must not end with '.'; write db.example.com",
    ),
    ("@db.example.com:5432", 16, "an ExternalName rule takes a host name only, not a port"),
    ("@a.com,b.com", 7, "an ExternalName rule takes a host name only, not ports"),
    ("@db example.com", 4, 'an ExternalName rule takes a host name only, not " "'),
    ("@", 1, "nothing follows '@'; expected a host name such as db.example.com"),
    (
        "#@db.example.com",
        2,
        "two type prefixes '#' and '@'; a rule has one type, so at most one prefix",
    ),
    ("abc", 1, "port \"abc\" is not a number; only the target port (after ':') may be a name"),
    ("+80", 1, "port \"+80\" is not a number; only the target port (after ':') may be a name"),
    ("٨٠", 1, "port \"٨٠\" is not a number; only the target port (after ':') may be a name"),
    ("!x:80:80", 2, 'node port "x" is not a number'),
    (
        "!31234:http:80",
        8,
        "port \"http\" is not a number; only the target port (after ':') may be a name",
    ),
    ("80::80", 3, "expected a port number or name after ':'"),
    ("80:", 3, "expected a port number or name after ':'"),
    ("1:2:3:4", 6, "too many ':'; a port is [NODE_PORT:]PORT[:TARGET]"),
    (":80", 1, "expected a port number before ':'"),
    ("80,", 3, "nothing follows ','; expected a port"),
    (",80", 1, "expected a port before ','"),
    ("80,,81", 4, "expected a port before ','"),
    ("80 81", 4, "unexpected \"81\"; separate ports with ','"),
    ("80\n81", 4, "unexpected \"81\"; separate ports with ','"),
    ("80 udp", 4, "unexpected \"udp\"; write the protocol after '/', as in 53/udp"),
    ("80 x", 4, 'unexpected "x"'),
    ("80/", 3, "expected a protocol after '/', such as udp or grpc"),
    (
        "80/upd",
        4,
        'unknown protocol "upd"; did you mean udp? (to use it as an app protocol on TCP, '
        "write tcp/upd)",
    ),
    (
        "80/tpc",
        4,
        'unknown protocol "tpc"; did you mean tcp? (to use it as an app protocol on TCP, '
        "write tcp/tpc)",
    ),
    (
        "80/a/b/c",
        7,
        "too many '/'; write [/TRANSPORT][/APP-PROTOCOL], "
        "as in 53/udp or 80/grpc or 80/tcp/example.com/proto",
    ),
    (
        "80/udp/a/b/c",
        11,
        "too many '/'; write [/TRANSPORT][/APP-PROTOCOL], as in 53/udp or 80/grpc",
    ),
    (
        "80/Example.com/x",
        4,
        'app protocol "Example.com/x" is not valid: it has a prefix that is not a DNS '
        "subdomain: it must be lowercase",
    ),
    (
        "80/x-",
        4,
        "app protocol \"x-\" is not valid: it must be letters, digits, '-', '_' or '.', "
        "starting and ending with a letter or digit, optionally after a domain prefix and '/' "
        "(e.g. example.com/my-protocol)",
    ),
    (
        "Web=80",
        1,
        'Service name "Web" is not a valid DNS-1035 label: it must be lowercase',
    ),
    (
        "9web=80",
        1,
        'Service name "9web" is not a valid DNS-1035 label: it must start with a letter',
    ),
    (
        " web- = 80",
        2,
        'Service name "web-" is not a valid DNS-1035 label: it must end with a letter or digit',
    ),
    (
        "my web=80",
        1,
        'Service name "my web" is not a valid DNS-1035 label: it contains " "; '
        "only a-z, 0-9 and '-' are allowed",
    ),
    (
        "a" * 64 + "=80",
        1,
        f'Service name "{"a" * 40}…" is not a valid DNS-1035 label: '
        "it is 64 characters long, more than 63",
    ),
    ("=80", 1, "nothing before '='; a Service name goes there, as in web=80:8080"),
    ("web=", 4, "nothing follows '='; expected ports or '@host'"),
    ("a=b=80", 4, "unexpected '='; an explicit Service name goes first, as in web=!80:8080"),
    ("!web=80", 5, "unexpected '='; an explicit Service name goes first, as in web=!80:8080"),
    ("!", 1, "nothing follows '!'; expected a port"),
    ("web=#", 5, "nothing follows '#'; expected a port"),
    (
        "80,#81",
        4,
        "unexpected '#'; the type prefix goes once at the start of the rule "
        "and applies to all its ports",
    ),
    ("80(", 3, "expected a port name and ')' after '('"),
    ("80()", 3, "expected a port name and ')' after '('"),
    ("80)", 3, "unexpected ')' without a '(' before it"),
    ("80(a)(b)", 6, "a port has one name, in one pair of parentheses"),
    ("(web)80", 1, "expected a port number before '('"),
    (
        "80(Web)",
        4,
        'port name "Web" is not a valid DNS-1123 label: it must be lowercase',
    ),
    ("80(a),81(a)", 10, 'port name "a" appears twice in this rule'),
    (
        "80,81(80-80)",
        7,
        'port name "80-80" is also the name of port 1 of this rule; give the ports distinct names',
    ),
]


@pytest.mark.parametrize(("text", "column", "message"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_rule_says_where_and_why(text: str, column: int, message: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse_rule(text, 4)
    error = caught.value
    assert (error.message, error.column) == (message, column)
    assert error.where == f"column {column}"
    assert (error.index, error.text) == (4, text)


def test_error_text_names_rule_column_and_problem() -> None:
    with pytest.raises(RuleError) as caught:
        parse_rule("!99999:80:8080", 2)
    assert str(caught.value) == (
        'rule 2 "!99999:80:8080", column 2: node port 99999 is outside 30000-32767'
    )


def test_node_port_range_is_the_configured_one() -> None:
    narrow = NodePortRange(20000, 20099)
    assert parse_rule("!20099:80:80", 0, narrow).ports[0].node_port == 20099
    with pytest.raises(RuleError, match=r"node port 31234 is outside 20000-20099$"):
        parse_rule("!31234:80:80", 0, narrow)
    with pytest.raises(RuleError, match=r"ports\[0\]\.node_port: node port 31234 is outside"):
        check_rule(one(NP, PortRule(80, 80, node_port=31234)), 0, narrow)


# --------------------------------------------------------------------------------------------
# Structured specs.


def test_check_rule_accepts_and_normalises_app_protocols() -> None:
    spec = one(
        NP,
        PortRule(80, "http", app_protocol="GRPC"),
        PortRule(81, 81, app_protocol="h2c"),
        PortRule(82, 82, app_protocol="example.com/MyProto"),
        name="api",
    )
    checked = check_rule(spec, 0)
    assert [p.app_protocol for p in checked.ports] == [
        "grpc",
        "kubernetes.io/h2c",
        "example.com/MyProto",
    ]
    assert checked.canonical() == "api=!80:http/grpc,81/h2c,82/example.com/MyProto"
    assert parse_rule(checked.canonical(), 0) == checked
    unchanged = one(CI, PortRule(80, 8080))
    assert check_rule(unchanged, 0) is unchanged


# (spec, where, message)
SPEC_REFUSED: list[tuple[ServiceRule, str, str]] = [
    (
        one(NP, PortRule(80, 8080, node_port=99999)),
        "ports[0].node_port",
        "node port 99999 is outside 30000-32767",
    ),
    (
        one(CI, PortRule(80, 8080, node_port=31234)),
        "ports[0].node_port",
        "node port 31234 is not allowed on a ClusterIP rule; "
        "only NodePort (!) and LoadBalancer (^) rules have node ports",
    ),
    (one(CI, PortRule(0, 8080)), "ports[0].port", "port 0 is outside 1-65535"),
    (one(CI, PortRule(80, 70000)), "ports[0].target_port", "target port 70000 is outside 1-65535"),
    (
        one(CI, PortRule(80, "8080")),
        "ports[0].target_port",
        'target port name "8080" is not a valid IANA service name: '
        "it must contain at least one letter",
    ),
    (
        one(CI, PortRule(80, 8080, app_protocol="a/b/c")),
        "ports[0].app_protocol",
        "app protocol \"a/b/c\" is not valid: it may contain at most one '/'",
    ),
    (
        one(CI, PortRule(80, 8080, app_protocol="")),
        "ports[0].app_protocol",
        'app protocol "" is not valid: it is empty',
    ),
    (
        one(CI, PortRule(80, 8080, name="Web")),
        "ports[0].name",
        'port name "Web" is not a valid DNS-1123 label: it must be lowercase',
    ),
    (
        one(CI, PortRule(80, 8080), PortRule(80, 9090)),
        "ports[1].port",
        "port 80/TCP appears twice in this rule",
    ),
    (
        one(LB, PortRule(80, 80, node_port=31000), PortRule(81, 81, node_port=31000)),
        "ports[1].node_port",
        "node port 31000 is already used by port 80 of this rule",
    ),
    (
        one(CI, PortRule(80, 80, name="a"), PortRule(81, 81, name="a")),
        "ports[1].name",
        'port name "a" appears twice in this rule',
    ),
    (
        one(CI, PortRule(80, 80, name="81-81"), PortRule(81, 81)),
        "ports[1].name",
        'port name "81-81" is also the name of port 1 of this rule; give the ports distinct names',
    ),
    (
        ServiceRule(EN, (PortRule(80, 80),), external_name="db.example.com"),
        "ports",
        "an ExternalName rule has no ports; it only names a host",
    ),
    (ServiceRule(EN), "external_name", "an ExternalName rule needs a host name"),
    (
        ServiceRule(EN, external_name="DB.example"),
        "external_name",
        'external name "DB.example" is not a lowercase DNS-1123 subdomain: it must be lowercase',
    ),
    (
        ServiceRule(CI, (PortRule(80, 80),), external_name="db.example.com"),
        "external_name",
        "only an ExternalName rule has a host name, not a ClusterIP rule",
    ),
    (ServiceRule(HL), "ports", "a headless (#) rule needs at least one port"),
    (
        one(CI, PortRule(80, 80), name="9lives"),
        "name",
        'Service name "9lives" is not a valid DNS-1035 label: it must start with a letter',
    ),
    (
        one(CI, PortRule(True, 80)),
        "ports[0].port",
        'port "True" is not a number',
    ),
    (
        one(CI, PortRule(80, 80, "TCP")),  # type: ignore[arg-type]
        "ports[0].protocol",
        'unknown protocol "TCP"; use TCP, UDP or SCTP',
    ),
    (
        ServiceRule("NodePort", (PortRule(80, 80),)),  # type: ignore[arg-type]
        "type",
        'unknown Service type "NodePort"',
    ),
]


@pytest.mark.parametrize(
    ("spec", "where", "message"), SPEC_REFUSED, ids=[s[1] + ":" + s[2][:30] for s in SPEC_REFUSED]
)
def test_check_rule_names_the_field(spec: ServiceRule, where: str, message: str) -> None:
    with pytest.raises(RuleError) as caught:
        check_rule(spec, 3)
    error = caught.value
    assert (error.where, error.message, error.column) == (where, message, None)
    assert (error.index, error.text) == (3, spec.canonical())
    assert str(error) == f'rule 3 "{spec.canonical()}", {where}: {message}'


# --------------------------------------------------------------------------------------------
# Pieces of the public API.


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30000-32767", NodePortRange(30000, 32767)),
        (" 20000 - 20099 ", NodePortRange(20000, 20099)),
        ("30000+2767", NodePortRange(30000, 32767)),
        ("30000", NodePortRange(30000, 30000)),
    ],
)
def test_node_port_range_parses_the_apiserver_flag(text: str, expected: NodePortRange) -> None:
    assert NodePortRange.parse(text) == expected
    assert str(expected) == f"{expected.low}-{expected.high}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "node port range '' is not of the form LOW-HIGH (e.g. 30000-32767)"),
        ("abc", "node port range 'abc' is not of the form LOW-HIGH (e.g. 30000-32767)"),
        ("1-2-3", "node port range '1-2-3' is not of the form LOW-HIGH (e.g. 30000-32767)"),
        (
            "32767-30000",
            "node port range 32767-30000 must lie within 1-65535 with the low end first",
        ),
        ("0-100", "node port range 0-100 must lie within 1-65535 with the low end first"),
        (
            "60000+9999",
            "node port range 60000-69999 must lie within 1-65535 with the low end first",
        ),
    ],
)
def test_node_port_range_refuses_nonsense(text: str, message: str) -> None:
    with pytest.raises(
        ValueError,
        match="^" + message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+") + "$",
    ):
        NodePortRange.parse(text)


def test_default_node_port_range_is_kubernetes_default() -> None:
    assert DEFAULT_NODE_PORTS == NodePortRange() == NodePortRange(30000, 32767)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("80:8088", ("80-8088",)),
        ("443:https", ("443-https",)),
        ("80", ("80-80",)),
        ("80:8080,443:8443", ("80-8080", "443-8443")),
        ("53/udp,53/tcp,80", ("53-53-udp", "53-53-tcp", "80-80")),
        ("53/udp(dns),53/tcp", ("dns", "53-53-tcp")),
    ],
)
def test_port_names_follow_kubectl(text: str, names: tuple[str, ...]) -> None:
    assert port_names(parse_rule(text, 0)) == names


@pytest.mark.parametrize(
    ("text", "field", "column"),
    [
        ("admin=!31234:80:http", "ports[0].target_port", 17),
        ("admin=!31234:80:http", "ports[0].node_port", 8),
        ("admin=!31234:80:http", "ports[0].port", 14),
        ("  admin=!31234:80:http", "name", 3),
        ("80,81:http", "ports[1].target_port", 7),
        ("80,81 : http / udp", "ports[1].protocol", 16),
        ("80,81/udp/grpc", "ports[1].app_protocol", 11),
        ("80,81/grpc", "ports[1].app_protocol", 7),
        ("80(web)", "ports[0].name", 4),
        ("x = @ db", "external_name", 7),
        ("80", "name", None),
        ("80", "ports[1].port", None),
        ("80", "ports[x].port", None),
        ("80", "nonsense", None),
    ],
)
def test_locate_points_at_the_token(text: str, field: str, column: int | None) -> None:
    assert locate(text, field) == column


def test_rule_error_pickles_and_formats() -> None:
    error = RuleError(1, "80:x", "column 4", 4, "bad")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.index, copy.text, copy.where, copy.column, copy.message) == (
        1,
        "80:x",
        "column 4",
        4,
        "bad",
    )
    assert str(copy) == 'rule 1 "80:x", column 4: bad'
    assert str(RuleError(0, "", "rule", None, "empty")) == 'rule 0 "", rule: empty'
    assert str(RuleError(0, "a", "", None, "whole")) == 'rule 0 "a": whole'
    # A huge rule is cut short in the sentence, and kept whole in .text.
    long = RuleError(0, "8" * 1000, "", None, "long")
    assert len(str(long)) < 260
    assert long.text == "8" * 1000


def test_fast_builders_make_ordinary_frozen_dataclasses() -> None:
    rule = parse_rule("x=!31234:80:8080/udp/quic", 0)
    port = rule.ports[0]
    assert type(rule) is ServiceRule
    assert type(port) is PortRule
    assert port == PortRule(80, 8080, UDP, 31234, "quic")
    assert hash(port) == hash(PortRule(80, 8080, UDP, 31234, "quic"))
    assert hash(rule) == hash(one(NP, PortRule(80, 8080, UDP, 31234, "quic"), name="x"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        port.port = 81  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.name = "y"  # type: ignore[misc]
    assert "_canonical" not in repr(rule)
    assert dataclasses.replace(rule, name="y").canonical() == "y=!31234:80:8080/udp/quic"


# --------------------------------------------------------------------------------------------
# ExternalName targets: nothing of the node, its link or the cluster (CVE-2021-25740).

_NOT_AN_ADDRESS = "; an ExternalName must be a DNS name, never an IP address"
_ALLOW = "; not allowed on this server (see --allow-external-name)"
_LOOPBACK = "is a loopback name: it points at the host of whoever resolves it" + _ALLOW
_IN_CLUSTER = (
    "is inside the cluster (the cluster domain cluster.local): it would reach the API server "
    "or another namespace's Service" + _ALLOW
)
_NO_DOT = (
    "is a name without a dot: a pod's resolver completes it with its search list, to a "
    "Service of the pod's own namespace" + _ALLOW
)

# (host, what the sentence says after 'external name "<host>" ')
REFUSED_TARGETS: list[tuple[str, str]] = [
    # IP addresses, however a resolver or a URL parser spells them.
    ("127.0.0.1", "is the IP address 127.0.0.1 (loopback)" + _NOT_AN_ADDRESS),
    ("127.1", "reads as the IPv4 address 127.0.0.1 (loopback)" + _NOT_AN_ADDRESS),
    ("0x7f.1", "reads as the IPv4 address 127.0.0.1 (loopback)" + _NOT_AN_ADDRESS),
    ("2130706433", "reads as the IPv4 address 127.0.0.1 (loopback)" + _NOT_AN_ADDRESS),
    ("017700000001", "reads as the IPv4 address 127.0.0.1 (loopback)" + _NOT_AN_ADDRESS),
    ("0x7f000001", "reads as the IPv4 address 127.0.0.1 (loopback)" + _NOT_AN_ADDRESS),
    ("0", "reads as the IPv4 address 0.0.0.0 (unspecified: this host)" + _NOT_AN_ADDRESS),
    (
        "169.254.169.254",
        "is the IP address 169.254.169.254 (link-local: the cloud metadata service)"
        + _NOT_AN_ADDRESS,
    ),
    ("169.254.0.1", "is the IP address 169.254.0.1 (link-local)" + _NOT_AN_ADDRESS),
    ("10.0.0.1", "is the IP address 10.0.0.1 (private)" + _NOT_AN_ADDRESS),
    ("8.8.8.8", "is the IP address 8.8.8.8" + _NOT_AN_ADDRESS),
    ("127.0.0.1.", "is the IP address 127.0.0.1 (loopback)" + _NOT_AN_ADDRESS),
    ("256.1.1.1", "is made of numbers, which reads as an IPv4 address" + _NOT_AN_ADDRESS),
    ("[::1]", "is the IP address ::1 (loopback)" + _NOT_AN_ADDRESS),
    ("::1", "is the IP address ::1 (loopback)" + _NOT_AN_ADDRESS),
    ("[::1]:443", "is the IP address ::1 (loopback), with a port" + _NOT_AN_ADDRESS),
    ("127.0.0.1:80", "is the IP address 127.0.0.1 (loopback), with a port" + _NOT_AN_ADDRESS),
    ("::ffff:127.0.0.1", "is the IP address ::ffff:7f00:1 (loopback)" + _NOT_AN_ADDRESS),
    ("fe80::1%eth0", "is the IP address fe80::1%eth0 (link-local)" + _NOT_AN_ADDRESS),
    (
        "fd00:ec2::254",
        "is the IP address fd00:ec2::254 (link-local: the cloud metadata service)"
        + _NOT_AN_ADDRESS,
    ),
    (
        "db.1",
        'ends in the label "1", which starts with a digit: no top-level domain does, and URL '
        "parsers read such names as IPv4 addresses" + _NOT_AN_ADDRESS,
    ),
    # The host itself and its link.
    ("localhost", _LOOPBACK),
    ("LOCALHOST", _LOOPBACK),
    ("localhost.", _LOOPBACK),
    ("LocalHost..", _LOOPBACK),
    ("localhost.localdomain", _LOOPBACK),
    ("ip6-localhost", _LOOPBACK),
    ("ip6-loopback", _LOOPBACK),
    ("localhost6.localdomain6", _LOOPBACK),
    (
        "app.localhost",
        "is a loopback name (RFC 6761): it points at the host of whoever resolves it" + _ALLOW,
    ),
    (
        "web.localdomain",
        "is under .localdomain, the local host's own domain in /etc/hosts" + _ALLOW,
    ),
    (
        "printer.local",
        "is a multicast DNS name (.local): it is resolved on the resolver's own link" + _ALLOW,
    ),
    (
        "metadata.google.internal",
        "is under .internal, reserved for private networks, where cloud metadata "
        "(metadata.google.internal) and node names live" + _ALLOW,
    ),
    (
        "1.0.0.127.in-addr.arpa",
        "is under .arpa, DNS infrastructure (reverse lookups, home.arpa), not a host" + _ALLOW,
    ),
    # The cluster.
    ("kubernetes.default.svc.cluster.local", _IN_CLUSTER),
    ("KUBERNETES.default.svc.cluster.local.", _IN_CLUSTER),
    ("api.team-b.svc.cluster.local", _IN_CLUSTER),
    ("10-0-0-1.team-b.pod.cluster.local", _IN_CLUSTER),
    ("cluster.local", _IN_CLUSTER),
    # Another cluster domain than this server's (--cluster-domain), or a neighbour cluster's.
    (
        "kubernetes.default.svc.k8s.example.org",
        "is shaped as a Service's name inside a cluster (<service>.<namespace>.svc.<cluster "
        "domain>)" + _ALLOW,
    ),
    (
        "api.team-b.svc.corp",
        "is shaped as a Service's name inside a cluster (<service>.<namespace>.svc.<cluster "
        "domain>)" + _ALLOW,
    ),
    (
        "api.team-b.svc",
        "is a name of the cluster: a pod's resolver completes .svc with the cluster domain"
        + _ALLOW,
    ),
    (
        "kubernetes.default",
        "is a name of the cluster: a pod's resolver completes it to "
        "kubernetes.default.svc.cluster.local, a Service of namespace default" + _ALLOW,
    ),
    (
        "kube-dns.kube-system",
        "is a name of the cluster: a pod's resolver completes it to "
        "kube-dns.kube-system.svc.cluster.local, a Service of namespace kube-system" + _ALLOW,
    ),
    (
        "kubernetes",
        "is a name of the cluster: a pod's resolver completes it to the API server" + _ALLOW,
    ),
    ("db", _NO_DOT),
    # Punycode: decoded and mapped as IDNA does, so it hides nothing.
    (
        "xn--mi7cdqncpe6aj",  # localhost in fullwidth letters (U+FF4C U+FF4F ...)
        'has the label "xn--mi7cdqncpe6aj", which IDNA reads as the plain ASCII "localhost": '
        "an internationalized label must hold other characters",
    ),
    (
        "xn--5g7caagbcfc9b.example",  # 127.0.0.1 in fullwidth digits and full stops
        'has the label "xn--5g7caagbcfc9b", which IDNA reads as the plain ASCII "127.0.0.1": '
        "an internationalized label must hold other characters",
    ),
    (
        "xn--localhost-93a1473k",  # é。localhost: an ideographic full stop separates labels
        '(IDNA "é.localhost") is a loopback name (RFC 6761): it points at the host of whoever '
        "resolves it" + _ALLOW,
    ),
    ("xn--99999999.example", 'has the label "xn--99999999", which is not valid punycode'),
]


@pytest.mark.parametrize(
    ("host", "reason"), REFUSED_TARGETS, ids=[host for host, _ in REFUSED_TARGETS]
)
def test_an_external_name_into_the_node_or_the_cluster_is_refused(host: str, reason: str) -> None:
    message = f'external name "{host}" {reason}'
    text = f"db=@{host}"
    with pytest.raises(RuleError) as caught:
        parse_rule(text, 3)
    assert (caught.value.message, caught.value.column, caught.value.where) == (
        message,
        5,
        "column 5",
    )
    with pytest.raises(RuleError) as caught:
        check_rule(ServiceRule(EN, name="db", external_name=host), 3)
    assert (caught.value.message, caught.value.where) == (message, "external_name")


@pytest.mark.parametrize(
    "host",
    [
        "db.example.com",
        "localhost.example.com",
        "kubernetes.example.com",
        "svc.example.com",
        "cluster.local.example.com",
        "default.example.org",
        "1.example.com",
        "xn--bcher-kva.example",
    ],
)
def test_public_names_are_unaffected(host: str) -> None:
    assert parse_rule(f"@{host}", 0).external_name == host
    assert check_rule(ServiceRule(EN, external_name=host), 0).external_name == host


def test_the_operator_allows_suffixes_and_names_the_cluster_domain() -> None:
    allowed = ExternalNamePolicy(allowed=("svc.cluster.local", "corp.internal", "db"))
    for host in ("kubernetes.default.svc.cluster.local", "svc.cluster.local", "pg.corp.internal"):
        assert parse_rule(f"@{host}", 0, DEFAULT_NODE_PORTS, allowed).external_name == host
        checked = check_rule(ServiceRule(EN, external_name=host), 0, DEFAULT_NODE_PORTS, allowed)
        assert checked.external_name == host
    assert parse_rule("@db", 0, DEFAULT_NODE_PORTS, allowed).external_name == "db"
    # A suffix is matched at label boundaries, and allows no address.
    for host, problem in [
        ("evilsvc.cluster.local", "is inside the cluster"),
        ("pod.cluster.local", "is inside the cluster"),
        ("metadata.google.internal", "is under .internal"),
        ("127.0.0.1", "is the IP address 127.0.0.1"),
    ]:
        with pytest.raises(RuleError, match=re.escape(f'external name "{host}" {problem}')):
            parse_rule(f"@{host}", 0, DEFAULT_NODE_PORTS, allowed)

    elsewhere = ExternalNamePolicy(cluster_domain="k8s.example.org")
    with pytest.raises(RuleError, match=r"inside the cluster \(the cluster domain k8s\.example"):
        parse_rule("@kubernetes.default.svc.k8s.example.org", 0, DEFAULT_NODE_PORTS, elsewhere)
    assert parse_rule("@api.example.org", 0, DEFAULT_NODE_PORTS, elsewhere).external_name


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (
            {"cluster_domain": "Cluster.Local"},
            'cluster domain "Cluster.Local" must be written "cluster.local"',
        ),
        ({"allowed": (".svc.cluster.local",)}, 'allowed suffix ".svc.cluster.local" must be'),
        ({"allowed": ("",)}, 'allowed suffix "" is not a lowercase DNS-1123 subdomain: it is '),
        (
            {"allowed": ("10.0.0.1",)},
            'allowed suffix "10.0.0.1" ends in a label that starts with a digit, which reads as '
            "an IP address; IP addresses are never allowed as ExternalName targets",
        ),
        ({"cluster_domain": "a_b.local"}, 'cluster domain "a_b.local" is not a lowercase'),
    ],
)
def test_a_policy_with_bad_domains_cannot_be_built(policy: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        ExternalNamePolicy(**policy)  # type: ignore[arg-type]


_NUMBER_PARTS = st.integers(0, 2**32).flatmap(
    lambda n: st.sampled_from([str(n), f"0x{n:x}", f"0{n:o}", f"00{n}"])
)


@relaxed
@given(st.lists(_NUMBER_PARTS, min_size=1, max_size=4).map(".".join))
@example("0x7f.1")
@example("127.1")
@example("0x")
@example("09")
def test_every_name_the_c_library_reads_as_an_address_is_refused(name: str) -> None:
    """inet_aton from the C library (through socket.inet_aton, no I/O) is the oracle: whatever
    it reads as an address, we read as the same one, and refuse."""
    try:
        packed = socket.inet_aton(name)
    except OSError:
        pass
    else:
        assert _inet_aton(name) == ipaddress.IPv4Address(packed)
    with pytest.raises(RuleError, match=_NOT_AN_ADDRESS.replace(".", r"\.") + "$"):
        parse_rule(f"@{name}", 0)


# Pieces of host names, refused ones and public ones, for the properties below.
_HOST_PIECES = st.lists(
    st.sampled_from(
        [
            "localhost",
            "localdomain",
            "local",
            "internal",
            "arpa",
            "svc",
            "pod",
            "cluster",
            "default",
            "kube-system",
            "kubernetes",
            "example",
            "com",
            "db",
            "127",
            "0x7f",
            "1",
            "169",
            "254",
            "xn--mi7cdqncpe6aj",
            "xn--p1ai",
            "xn--bcher-kva",
        ]
    ),
    min_size=1,
    max_size=5,
).map(".".join)


@relaxed
@given(_HOST_PIECES, st.sampled_from(["", ".", ".."]), st.booleans())
def test_case_and_trailing_dots_never_get_a_refused_name_through(
    host: str, dots: str, upper: bool
) -> None:
    plain = _parse_or_error(f"@{host}", 0)
    spelled = host.upper() if upper else host
    variant = _parse_or_error(f"@{spelled}{dots}", 0)
    if isinstance(plain, RuleError):
        # Refused for what it names, in any spelling, with the same reason.
        assert isinstance(variant, RuleError)
        reason = plain.message.partition('" ')[2]
        assert variant.message.partition('" ')[2] == reason
    elif spelled != host or dots:
        # A public name in another spelling is refused only for its spelling.
        assert isinstance(variant, RuleError)
        assert "is not a lowercase DNS-1123 subdomain" in variant.message
    # Text and structured specs agree.
    spec = _check_or_error(ServiceRule(EN, external_name=f"{spelled}{dots}"))
    if isinstance(variant, RuleError):
        assert isinstance(spec, RuleError)
        assert spec.message == variant.message
    else:
        assert spec == variant


@relaxed
@given(_HOST_PIECES)
def test_an_accepted_name_is_a_public_dns_name(host: str) -> None:
    """An independent reading of the documented lists: what passes has a dot, a last label
    that starts with a letter, and none of the refused names or suffixes, decoded or not."""
    rule = _parse_or_error(f"@{host}", 0)
    if isinstance(rule, RuleError):
        return
    forms = {host, host.encode("ascii").decode("idna")}
    refused_suffixes = ("localhost", "localdomain", "local", "internal", "arpa", "svc", "pod")
    for form in forms:
        labels = form.split(".")
        assert len(labels) > 1
        assert labels[-1][0].isalpha()
        assert labels[-1] not in (*refused_suffixes, "default", "kube-system")
        assert not form.endswith("cluster.local")


def _check_or_error(rule: ServiceRule) -> ServiceRule | RuleError:
    try:
        return check_rule(rule, 0)
    except RuleError as e:
        return e


# --------------------------------------------------------------------------------------------
# Properties.


@relaxed
@given(service_rules())
def test_structured_rules_render_and_parse_back(rule: ServiceRule) -> None:
    checked = check_rule(rule, 0)
    text = checked.canonical()
    assert parse_rule(text, 0) == checked
    assert check_rule(checked, 0) == checked
    assert parse_rule(text, 0).canonical() == text


def _parse_or_error(text: str, index: int) -> ServiceRule | RuleError:
    try:
        return parse_rule(text, index)
    except RuleError as e:
        return e


@relaxed
@given(st.text(max_size=40) | rule_like_text)
@example("!31234:80:8080,31234:81:81")
@example("80:8080/tcp,443")
@example("web-=80")
@example("80:8080(web)")
def test_any_text_parses_or_raises_rule_error_only(text: str) -> None:
    rule = _parse_or_error(text, 7)
    if isinstance(rule, RuleError):
        assert (rule.index, rule.text) == (7, text)
        assert rule.column is not None
        assert 1 <= rule.column <= max(len(text), 1)
        assert rule.where == f"column {rule.column}"
        assert rule.message
        return
    # Accepted: canonical text is stable, and reads back as the same rule.
    canonical = rule.canonical()
    assert parse_rule(canonical, 0) == rule
    assert dataclasses.replace(rule).canonical() == canonical  # a copy reads the same
    assert check_rule(rule, 0) == rule
