"""Who a certificate, a SPIFFE ID or an x-forwarded-client-cert header names (pure parsing)."""

from __future__ import annotations

import pytest

from server.auth.gate import _is_loopback_peer
from server.auth.identity import (
    Caller,
    IdentityError,
    Method,
    forwarded_client_uri,
    from_certificate,
    from_spiffe_id,
)
from tests.pki import CertificateAuthority

CA = CertificateAuthority("unit")


def test_a_subject_cn_is_the_user_and_its_organizations_are_the_groups() -> None:
    pem = CA.issue(common_name="alice", organizations=("dev", "platform")).certificate
    assert from_certificate(pem) == Caller(
        "alice", ("dev", "platform", "system:authenticated"), Method.CERTIFICATE
    )


def test_a_kubernetes_spiffe_id_wins_over_the_subject() -> None:
    pem = CA.issue(
        common_name="ignored", uris=("https://example.com/x", "spiffe://td.example/ns/web/sa/api")
    ).certificate
    caller = from_certificate(pem)
    assert caller == Caller(
        "system:serviceaccount:web:api",
        ("system:serviceaccounts", "system:serviceaccounts:web", "system:authenticated"),
        Method.SPIFFE,
    )


def test_a_spiffe_id_of_another_shape_falls_back_to_the_subject() -> None:
    pem = CA.issue(common_name="batch", uris=("spiffe://td.example/workload/batch",)).certificate
    caller = from_certificate(pem)
    assert caller is not None
    assert (caller.user, caller.method) == ("batch", Method.CERTIFICATE)


def test_a_certificate_with_neither_names_nobody() -> None:
    assert from_certificate(CA.issue(organizations=("dev",)).certificate) is None


def test_two_spiffe_ids_are_refused() -> None:
    pem = CA.issue(uris=("spiffe://a/ns/x/sa/y", "spiffe://a/ns/x/sa/z")).certificate
    with pytest.raises(IdentityError, match="carries 2 SPIFFE IDs"):
        from_certificate(pem)


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("spiffe://td/ns/Web/sa/api", "namespace 'Web'"),
        ("spiffe://td/ns/web/sa/API_1", "service account 'API_1'"),
    ],
)
def test_spiffe_ids_with_names_kubernetes_cannot_have_are_refused(uri: str, problem: str) -> None:
    with pytest.raises(IdentityError, match=problem):
        from_spiffe_id(uri, Method.SPIFFE)


@pytest.mark.parametrize(
    "uri", ["https://td/ns/a/sa/b", "spiffe://td", "spiffe:///ns/a/sa/b", "spiffe://td/ns/a/sa/b/c"]
)
def test_other_uris_are_not_service_accounts(uri: str) -> None:
    assert from_spiffe_id(uri, Method.SPIFFE) is None


def test_the_last_element_of_the_forwarded_header_is_the_client() -> None:
    header = (
        "By=spiffe://td/ns/edge/sa/gw;URI=spiffe://td/ns/far/sa/away,"
        "By=spiffe://td/ns/k8sailor/sa/k8sailor;Hash=ab12;"
        'Subject="CN=x,O=a;b \\"q\\"";URI=spiffe://td/ns/team/sa/caller'
    )
    assert forwarded_client_uri(header) == "spiffe://td/ns/team/sa/caller"


def test_a_quoted_uri_in_the_forwarded_header_is_unquoted() -> None:
    assert forwarded_client_uri('URI="spiffe://td/ns/a/sa/b"') == "spiffe://td/ns/a/sa/b"


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ('Subject="CN=open', "a quoted value is not closed"),
        ("Hash=1;garbage", "'garbage' is not key=value"),
        ("URI=spiffe://a/ns/b/sa/c;URI=spiffe://a/ns/b/sa/d", "more than one URI"),
    ],
)
def test_malformed_forwarded_headers_are_refused(header: str, problem: str) -> None:
    with pytest.raises(IdentityError, match=problem):
        forwarded_client_uri(header)


def test_a_forwarded_element_without_a_uri_names_nobody() -> None:
    assert forwarded_client_uri("By=spiffe://td/ns/a/sa/b;Hash=00") is None


@pytest.mark.parametrize(
    ("peer", "loopback"),
    [
        ("ipv4:127.0.0.1:5000", True),
        ("ipv4:127.8.9.1:5000", True),
        ("ipv6:[::1]:5000", True),
        ("ipv6:%5B::1%5D:5000", True),
        ("ipv6:[::ffff:127.0.0.1]:5000", True),
        ("ipv4:10.0.0.7:5000", False),
        ("ipv6:[fd00::2]:5000", False),
        ("ipv6:[::ffff:10.0.0.7]:5000", False),
        ("unix:/tmp/socket", False),
        ("garbage", False),
    ],
)
def test_only_loopback_peers_count_as_the_sidecar(peer: str, loopback: bool) -> None:
    assert _is_loopback_peer(peer) is loopback
