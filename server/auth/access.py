"""What a caller may do, asked of the API server with SubjectAccessReviews.

Kubernetes RBAC is the policy: k8sailor asks whether the caller may

    verb: create   group: k8sailor.io   resource: services   subresource: <type>
    namespace: <the request's namespace>   name: <the Deployment>

for each Service type a request uses, and grants exactly what the cluster says. The RPCs that
manage what create made ask the same with the verbs list, delete and update. The resource
exists only in RBAC rules (no CRD is needed: RBAC matches names, it does not look them up).

Answers are remembered per caller, namespace, Deployment and type: an allow for `allowed_ttl`
seconds (60 by default, so a revoked RoleBinding stops working within a minute) and a denial
for `denied_ttl` (10, so a new grant is honoured within seconds), as kube-apiserver's webhook
authorizer does with longer defaults.

A review's API call takes its turn for k8sailor's API call slots as its caller's own share
(server.kube.fairness), not as background work: one caller's many reviews, or a big Apply's calls,
do not hold up another caller's authorization.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from server.auth.cache import ReviewCache, Timed
from server.auth.errors import AuthUnavailable
from server.auth.identity import Caller
from server.kube import Kube
from server.kube.errors import KubeError, failure_reason
from server.kube.fairness import Shares, use_share
from server.rules import ServiceType

log = logging.getLogger("k8sailor.auth")

API_GROUP = "k8sailor.io"
RESOURCE = "services"
VERB = "create"

SUBRESOURCES: dict[ServiceType, str] = {
    ServiceType.CLUSTER_IP: "clusterip",
    ServiceType.HEADLESS: "headless",
    ServiceType.NODE_PORT: "nodeport",
    ServiceType.LOAD_BALANCER: "loadbalancer",
    ServiceType.EXTERNAL_NAME: "externalname",
}


def permission(type_: ServiceType, namespace: str, deployment: str, verb: str = VERB) -> str:
    """The permission a rule of this type needs, as a person would grant it."""
    return (
        f"{verb} {RESOURCE}/{SUBRESOURCES[type_]} in API group {API_GROUP} in namespace "
        f'"{namespace}" (resourceName "{deployment}")'
    )


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str = ""  # the authorizer's own words, when it gave any


_Key = tuple[str, tuple[str, ...], str, tuple[tuple[str, tuple[str, ...]], ...], str, str, str, str]


class AccessReviewer:
    def __init__(
        self,
        kube: Kube,
        *,
        allowed_ttl: float = 60.0,
        denied_ttl: float = 10.0,
        timeout: float = 10.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] | None = None,
        shares: Shares | None = None,
    ) -> None:
        """shares: whose turn a review's API call takes, by caller: the same Shares as the
        edge's (server.app makes one), so that a caller's reviews and its requests' calls take
        one turn between them, not one each; None: a Shares of this reviewer's own."""
        self._kube = kube
        self._allowed_ttl = allowed_ttl
        self._denied_ttl = denied_ttl
        self._timeout = timeout
        self.cache: ReviewCache[_Key, Decision] = (
            ReviewCache(max_entries=max_entries)
            if clock is None
            else ReviewCache(max_entries=max_entries, clock=clock)
        )
        self._shares = shares if shares is not None else Shares(max_entries)

    async def decide(
        self,
        caller: Caller,
        namespace: str,
        deployment: str,
        types: Iterable[ServiceType],
        verb: str = VERB,
    ) -> dict[ServiceType, Decision]:
        """One decision per type. Cached ones are read without awaiting (a busy caller's
        every call: no task per type); the others are reviewed concurrently."""
        extra = tuple(sorted((key, tuple(values)) for key, values in caller.extra.items()))
        decisions: dict[ServiceType, Decision] = {}
        missing: list[tuple[ServiceType, _Key]] = []
        for type_ in sorted(set(types)):
            key: _Key = (
                caller.user, caller.groups, caller.uid, extra, namespace, deployment,
                SUBRESOURCES[type_], verb,
            )  # fmt: skip
            decision = self.cache.cached(key)
            if decision is None:
                missing.append((type_, key))
            else:
                decisions[type_] = decision
        if missing:
            reviewed = await asyncio.gather(
                *(
                    self.cache.get(
                        key,
                        functools.partial(
                            self._review, caller, namespace, deployment, SUBRESOURCES[type_], verb
                        ),
                    )
                    for type_, key in missing
                )
            )
            decisions.update(zip((type_ for type_, _ in missing), reviewed, strict=True))
        return decisions

    async def _review(
        self, caller: Caller, namespace: str, deployment: str, subresource: str, verb: str
    ) -> Timed[Decision]:
        spec: dict[str, Any] = {
            "user": caller.user,
            "groups": list(caller.groups),
            "resourceAttributes": {
                "namespace": namespace,
                "verb": verb,
                "group": API_GROUP,
                "resource": RESOURCE,
                "subresource": subresource,
                "name": deployment,
            },
        }
        if caller.uid:
            spec["uid"] = caller.uid
        if caller.extra:
            spec["extra"] = {key: list(values) for key, values in caller.extra.items()}
        # A task of its own (ReviewCache.get), so this sets the turn of this review alone.
        use_share(self._shares.get(caller.user))
        try:
            review = await self._kube.create_subject_access_review(spec, timeout=self._timeout)
        except KubeError as error:
            # Not yet authorized: the caller hears why in one word, never the API server's
            # address or k8sailor's own identity, which the full message may name.
            log.warning("a SubjectAccessReview for %s failed: %s", caller.user, error.message)
            raise AuthUnavailable(
                f"the API server could not be asked what {caller.user} may do "
                f"({failure_reason(error)}); try again"
            ) from error
        status: dict[str, Any] = review.get("status") or {}
        # Anything but an explicit allow is a denial: an authorizer with no opinion, or one
        # that failed (evaluationError), grants nothing.
        allowed = status.get("allowed") is True and status.get("denied") is not True
        reason = str(status.get("reason") or status.get("evaluationError") or "")
        ttl = self._allowed_ttl if allowed else self._denied_ttl
        return Timed(Decision(allowed=allowed, reason=reason), ttl)
