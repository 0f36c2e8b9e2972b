"""What the API server refuses points at the caller's rule: the column of the refused token for
a rule written as text, the field path for a structured spec (from the Status causes)."""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client

from client import Client, Outcome, ServicePort, ServiceSpec, ServiceType

TAKEN = 31877


async def test_a_node_port_the_cluster_has_taken_points_at_its_token(
    k8sailor: Client, api_client: client.ApiClient, namespace: str, deployment: dict[str, Any]
) -> None:
    # Only the cluster knows the node port is taken; its Status names spec.ports[0].nodePort.
    taken = client.V1Service(
        metadata=client.V1ObjectMeta(name="taken"),
        spec=client.V1ServiceSpec(
            type="NodePort", ports=[client.V1ServicePort(port=1, node_port=TAKEN)]
        ),
    )
    await client.CoreV1Api(api_client).create_namespaced_service(namespace, taken)
    spec = ServiceSpec(
        name="structured",
        type=ServiceType.SERVICE_TYPE_NODE_PORT,
        ports=[ServicePort(port=80, target_port_number=8088, node_port=TAKEN)],
    )
    written = f"  np = !{TAKEN}:80:8088"
    results = [
        r
        async for r in k8sailor.create_services(
            "web", [written, spec], namespace=namespace, dry_run=True
        )
    ]
    by_index = {result.index: result for result in results}
    assert {result.outcome for result in results} == {Outcome.INVALID}
    assert by_index[0].reason == by_index[1].reason == "Invalid"
    # Column 9 is where the node port starts in the caller's own text.
    assert by_index[0].error.startswith(f'rule 0 "{written}", column 9: ')
    assert "provided port is already allocated" in by_index[0].error
    assert ", ports[0].node_port: " in by_index[1].error
    assert "provided port is already allocated" in by_index[1].error
