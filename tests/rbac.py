"""RBAC in tests: a binding is not in force the moment it is created."""

from __future__ import annotations

import asyncio
from typing import Any

from kubernetes_asyncio import client


async def until_effective(
    api_client: client.ApiClient,
    namespace: str,
    subject: dict[str, str],
    rule: client.V1PolicyRule,
) -> None:
    """Until the API server's authorizer allows what the new binding grants. Its RBAC rules
    come from a watch, so a SubjectAccessReview sent the moment a binding is created may still
    be answered from the rules before it (seen once on a loaded machine)."""
    if subject["kind"] == "ServiceAccount":
        sa = f"system:serviceaccount:{subject['namespace']}:{subject['name']}"
        who: dict[str, Any] = {"user": sa, "groups": ["system:serviceaccounts"]}
    elif subject["kind"] == "Group":
        who = {"user": "someone", "groups": [subject["name"]]}
    else:
        who = {"user": subject["name"]}
    attributes = {
        "namespace": namespace,
        "verb": rule.verbs[0],
        "group": rule.api_groups[0],
        "resource": rule.resources[0].split("/")[0],
        "subresource": rule.resources[0].partition("/")[2],
        "name": (rule.resource_names or [""])[0],
    }
    review: Any = {"spec": {**who, "resourceAttributes": attributes}}
    authorization = client.AuthorizationV1Api(api_client)
    for _ in range(200):
        answer = await authorization.create_subject_access_review(review)
        if answer.status.allowed:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the binding of {subject} never took effect for {attributes}")
