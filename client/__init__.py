"""The k8sailor Python client.

async with connect("127.0.0.1:50051") as k8sailor:
    async for result in k8sailor.create_services("web", ["80:8088", "#80:80"]):
        print(result.index, result.outcome.name, result.service_name)
"""

from client.connection import (
    Change,
    Client,
    Deleted,
    ExposedService,
    Outcome,
    Port,
    RequestFailed,
    Result,
    TokenFile,
    channel_credentials,
    connect,
)
from k8sailor.v1.exposure_pb2 import Protocol, ServicePort, ServiceSpec, ServiceType

__all__ = [
    "Change",
    "Client",
    "Deleted",
    "ExposedService",
    "Outcome",
    "Port",
    "Protocol",
    "RequestFailed",
    "Result",
    "ServicePort",
    "ServiceSpec",
    "ServiceType",
    "TokenFile",
    "channel_credentials",
    "connect",
]
