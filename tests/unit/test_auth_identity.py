"""Who a certificate, a SPIFFE ID or an x-forwarded-client-cert header names (pure parsing)."""

from __future__ import annotations

import pytest

from server.auth.gate import _is_mesh_peer
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
TRUSTED = ("cluster.local",)


def test_a_subject_cn_is_the_user_and_its_organizations_are_the_groups() -> None:
    pem = CA.issue(common_name="alice", organizations=("dev", "platform")).certificate
    assert from_certificate(pem, TRUSTED) == Caller(
        "alice", ("dev", "platform", "system:authenticated"), Method.CERTIFICATE
    )


@pytest.mark.parametrize(
    ("names", "user"),
    [(("mallory", "alice"), "alice"), (("alice", "mallory"), "mallory"), (("x", "y", "z"), "z")],
)
def test_of_several_cns_the_last_is_the_user_as_kube_apiserver_reads_it(
    names: tuple[str, ...], user: str
) -> None:
    # Go's pkix.Name.FillFromRDNSequence overwrites CommonName at every CN attribute, and
    # kube-apiserver's x509 authenticator takes Subject.CommonName as the user.
    pem = CA.issue(common_name=names[0], more_common_names=names[1:]).certificate
    caller = from_certificate(pem, TRUSTED)
    assert caller is not None
    assert (caller.user, caller.method) == (user, Method.CERTIFICATE)


@pytest.mark.parametrize(
    ("subject", "field"),
    [
        (
            {"common_name": "alice", "organizations": ("dev", "system:masters")},
            "O='system:masters'",
        ),
        ({"common_name": "system:serviceaccount:kube-system:x"}, "CN='system:serviceaccount:"),
        ({"common_name": "system:kube-controller-manager"}, "CN='system:kube-controller"),
        (
            {"common_name": "system:node:n1", "organizations": ("system:nodes",)},
            "CN='system:node:n1'",
        ),
    ],
)
def test_a_certificate_subject_may_not_claim_a_reserved_system_name(
    subject: dict[str, object], field: str
) -> None:
    # system:masters bypasses RBAC in every SubjectAccessReview; --client-ca-file may be an
    # issuer teams can request from, so the subject must not reach Kubernetes' own names.
    pem = CA.issue(**subject).certificate  # type: ignore[arg-type]
    with pytest.raises(IdentityError) as raised:
        from_certificate(pem, TRUSTED)
    assert field in str(raised.value)
    assert "SPIFFE ID" in str(raised.value)


def test_a_trusted_kubernetes_spiffe_id_is_the_service_account_whatever_the_subject() -> None:
    pem = CA.issue(
        common_name="alice",
        organizations=("system:masters",),
        uris=("https://example.com/x", "spiffe://cluster.local/ns/web/sa/api"),
    ).certificate
    assert from_certificate(pem, TRUSTED) == Caller(
        "system:serviceaccount:web:api",
        ("system:serviceaccounts", "system:serviceaccounts:web", "system:authenticated"),
        Method.SPIFFE,
    )


def test_a_spiffe_id_from_another_trust_domain_is_refused_not_read_as_the_cn() -> None:
    pem = CA.issue(common_name="alice", uris=("spiffe://evil.example/ns/web/sa/api",)).certificate
    with pytest.raises(IdentityError) as raised:
        from_certificate(pem, TRUSTED)
    assert str(raised.value) == (
        "SPIFFE ID 'spiffe://evil.example/ns/web/sa/api' is from trust domain 'evil.example', "
        "which this server does not believe (it believes cluster.local: --spiffe-trust-domain)"
    )


def test_every_trust_domain_given_is_believed() -> None:
    domains = ("cluster.local", "east.example")
    for uri in ("spiffe://cluster.local/ns/a/sa/b", "spiffe://east.example/ns/a/sa/b"):
        pem = CA.issue(uris=(uri,)).certificate
        caller = from_certificate(pem, domains)
        assert caller is not None
        assert caller.user == "system:serviceaccount:a:b"


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("spiffe://cluster.local/workload/batch", "names no Kubernetes ServiceAccount"),
        ("SPIFFE://cluster.local/ns/a/sa/b", "is not a SPIFFE ID: it must start with spiffe://"),
        ("spiffe://Cluster.Local/ns/a/sa/b", "'Cluster.Local' is not a SPIFFE trust domain"),
    ],
)
def test_a_spiffe_uri_that_names_no_trusted_service_account_is_refused_not_skipped(
    uri: str, problem: str
) -> None:
    pem = CA.issue(common_name="batch", uris=(uri,)).certificate
    with pytest.raises(IdentityError, match=problem):
        from_certificate(pem, TRUSTED)


def test_a_certificate_with_neither_names_nobody() -> None:
    assert from_certificate(CA.issue(organizations=("dev",)).certificate, TRUSTED) is None


def test_two_spiffe_ids_are_refused() -> None:
    pem = CA.issue(uris=("spiffe://a/ns/x/sa/y", "spiffe://a/ns/x/sa/z")).certificate
    with pytest.raises(IdentityError, match="carries 2 SPIFFE IDs"):
        from_certificate(pem, ("a",))


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("spiffe://td/ns/Web/sa/api", "namespace 'Web'"),
        ("spiffe://td/ns/web/sa/API_1", "service account 'API_1'"),
        ("https://td/ns/a/sa/b", "is not a SPIFFE ID"),
        ("spiffe://td", "names no Kubernetes ServiceAccount"),
        ("spiffe:///ns/a/sa/b", "a trust domain is empty"),
        ("spiffe://td/ns/a/sa/b/c", "names no Kubernetes ServiceAccount"),
    ],
)
def test_spiffe_ids_that_name_no_service_account_are_refused(uri: str, problem: str) -> None:
    with pytest.raises(IdentityError, match=problem):
        from_spiffe_id(uri, Method.SPIFFE, ("td",))


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
    ("peer", "mesh"),
    [
        ("unix:", True),
        ("unix:/var/run/k8sailor/mesh.sock", True),
        ("ipv4:127.0.0.1:5000", False),
        ("ipv6:[::1]:5000", False),
        ("ipv6:%5B::1%5D:5000", False),
        ("ipv6:[::ffff:127.0.0.1]:5000", False),
        ("ipv4:10.0.0.7:5000", False),
        ("unix-abstract:mesh", False),
        ("garbage", False),
    ],
)
def test_only_unix_socket_peers_count_as_the_sidecar(peer: str, mesh: bool) -> None:
    assert _is_mesh_peer(peer) is mesh
