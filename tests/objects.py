"""Kubernetes objects that tests, `make run` and the benchmark create in the cluster."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kubernetes_asyncio import client


def deployment(
    name: str,
    labels: Mapping[str, str],
    ports: Sequence[tuple[str, int, str]] = (),
) -> client.V1Deployment:
    """A one-container Deployment selecting `labels`, with named container ports
    (name, port, protocol) so that rules can name their target ports."""
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=dict(labels)),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels=dict(labels)),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=dict(labels)),
                spec=client.V1PodSpec(
                    containers=[
                        client.V1Container(
                            name=name,
                            image="nginx:1.27",
                            ports=[
                                client.V1ContainerPort(
                                    name=port_name, container_port=port, protocol=protocol
                                )
                                for port_name, port, protocol in ports
                            ],
                        )
                    ]
                ),
            ),
        ),
    )
