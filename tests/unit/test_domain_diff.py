"""The pure parts of the lifecycle flows: the field diff (server.domain.diff), conflict managers
(server.kube.errors) and folding managedFields (server.domain.field_managers)."""

from __future__ import annotations

from typing import Any

from server.domain.diff import FieldChange, diff_service
from server.domain.field_managers import adopt_managed_fields
from server.kube.errors import conflicting_managers


def service(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "web",
            "resourceVersion": "1",
            "labels": {"app.kubernetes.io/managed-by": "k8sailor"},
            "annotations": {"k8sailor.io/rule": "80:8088"},
        },
        "spec": spec,
        "status": {"loadBalancer": {}},
    }


def test_equal_services_have_no_changes_whatever_the_bookkeeping() -> None:
    before = service(ports=[{"port": 80}])
    after = service(ports=[{"port": 80}])
    after["metadata"]["resourceVersion"] = "2"
    after["metadata"]["managedFields"] = [{"manager": "k8sailor"}]
    after["status"] = {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}

    assert list(diff_service(before, after)) == []


def test_changes_are_paths_with_old_and_new_values_as_text() -> None:
    before = service(type="NodePort", ports=[{"port": 80, "targetPort": 8088, "nodePort": 30001}])
    after = service(
        type="NodePort",
        ports=[
            {"port": 80, "targetPort": "http", "nodePort": 30001},
            {"port": 443, "targetPort": 8443},
        ],
    )
    after["metadata"]["annotations"]["k8sailor.io/rule"] = "!80:http,443:8443"

    assert list(diff_service(before, after)) == [
        FieldChange('metadata.annotations["k8sailor.io/rule"]', "80:8088", "!80:http,443:8443"),
        FieldChange("spec.ports[0].targetPort", "8088", "http"),
        FieldChange("spec.ports[1]", "", '{"port":443,"targetPort":8443}'),
    ]


def test_a_removed_field_has_an_empty_after() -> None:
    before = service(ports=[{"port": 80, "appProtocol": "http"}])
    after = service(ports=[{"port": 80}])

    assert list(diff_service(before, after)) == [
        FieldChange("spec.ports[0].appProtocol", "http", "")
    ]


def test_conflicting_managers_are_read_from_the_api_servers_message() -> None:
    one = (
        'Apply failed with 1 conflict: conflict with "kubectl-patch" using v1: '
        '.spec.ports[port=80,protocol="TCP"].targetPort'
    )
    two = (
        'Apply failed with 3 conflicts: conflicts with "kubectl-edit" using v1:\n'
        "- .spec.selector\n- .spec.type\n"
        'conflict with "helm" using v1: .metadata.labels'
    )

    assert conflicting_managers(one) == ["kubectl-patch"]
    assert conflicting_managers(two) == ["kubectl-edit", "helm"]
    assert conflicting_managers("the object has been modified") == []


UPDATE = {
    "manager": "k8sailor",
    "operation": "Update",
    "apiVersion": "v1",
    "time": "2026-01-01T00:00:00Z",
    "fieldsType": "FieldsV1",
    "fieldsV1": {"f:spec": {"f:ports": {'k:{"port":80,"protocol":"TCP"}': {".": {}}}}},
}
KUBECTL = {"manager": "kubectl-patch", "operation": "Update", "fieldsV1": {"f:spec": {}}}


def test_nothing_to_adopt_without_an_update_of_ours() -> None:
    assert adopt_managed_fields([KUBECTL]) is None
    assert adopt_managed_fields([]) is None


def test_our_update_becomes_our_apply_and_the_others_stay() -> None:
    adopted = adopt_managed_fields([UPDATE, KUBECTL])

    assert adopted == [KUBECTL, {**UPDATE, "operation": "Apply"}]


def test_our_update_is_folded_into_an_existing_apply_of_ours() -> None:
    applied = {
        "manager": "k8sailor",
        "operation": "Apply",
        "apiVersion": "v1",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:selector": {}}, "f:metadata": {"f:labels": {}}},
    }

    adopted = adopt_managed_fields([applied, UPDATE])

    assert adopted is not None
    (merged,) = adopted
    assert merged["operation"] == "Apply"
    assert merged["fieldsV1"] == {
        "f:spec": {"f:selector": {}, "f:ports": {'k:{"port":80,"protocol":"TCP"}': {".": {}}}},
        "f:metadata": {"f:labels": {}},
    }
