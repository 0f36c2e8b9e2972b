"""What bearer tokens k8sailor has not seen may cost in TokenReviews, per caller.

A token k8sailor has not seen costs a review, so what a caller with random tokens can make
k8sailor ask the API server is bounded (:class:`ReviewBounds`). :class:`Peers` keeps the
bounds per connection (the gRPC peer) and per client address: a connection with
`per_connection` tokens refused in the last `window` seconds, or an IP address with
`per_address` refused over all its connections (so that a new connection for every few tokens
gains nothing), gets UNAUTHENTICATED for any other unknown token without a review, until the
oldest refusal is that old; one with that many under review (or refused and under review
together) gets UNAVAILABLE until they are answered. Loopback addresses and Unix sockets are
bounded per connection only: every caller through a proxy in the pod (a mesh sidecar,
`kubectl port-forward`) arrives from there, and one of them must not lock the others out.
Tokens the cache knows, good or refused, cost no review and are answered as always. A client
that sent only good tokens leaves nothing behind; at most `peers` connections and addresses
are remembered.

The bounds on reviews in flight and waiting (``in_flight``, ``shared_in_flight``, ``waiting``)
are kept by :class:`~server.auth.tokens.TokenReviewer`, which takes its turns by the share an
admission names.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from server.auth.errors import AuthUnavailable, Unauthenticated
from server.kube.fairness import Share


@dataclass(frozen=True, slots=True)
class ReviewBounds:
    """What tokens k8sailor has not seen may cost in TokenReviews (see the module doc)."""

    per_connection: int = 8  # refused or under review, per connection, within window
    per_address: int = 64  # ... per client IP address (not loopback), all its connections
    window: float = 60.0  # seconds a refusal counts against its connection and address
    in_flight: int = 8  # reviews at a time, all connections together
    shared_in_flight: int = 4  # ... of which a connection with one in flight may take
    waiting: int = 256  # reviews waiting for one of those, all connections together
    peers: int = 10_000  # connections and addresses remembered (with refusals or reviews)

    def __post_init__(self) -> None:
        for name in ("per_connection", "per_address", "in_flight", "shared_in_flight", "peers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.shared_in_flight > self.in_flight:
            raise ValueError(
                f"shared_in_flight ({self.shared_in_flight}) must not exceed in_flight "
                f"({self.in_flight})"
            )
        if self.waiting < 0:
            raise ValueError(f"waiting must be at least 0, not {self.waiting}")
        if self.window <= 0:
            raise ValueError(f"window must be positive, not {self.window}")


DEFAULT_REVIEW_BOUNDS: Final = ReviewBounds()


class _Tally:
    """What one connection's (or one address's) unknown tokens cost lately: reviews under
    way, recent refusals; and its turn for the review slots and the API call slots."""

    __slots__ = ("key", "refusals", "reviewing", "share")

    def __init__(self, key: str, limit: int) -> None:
        self.key = key
        self.share = Share(key)
        self.reviewing = 0
        self.refusals: deque[float] = deque(maxlen=limit)  # when, oldest first


@dataclass(frozen=True, slots=True)
class Admission:
    """One review let in: what it counts against, and whose turn it takes."""

    tallies: tuple[_Tally, ...]  # the connection's, and its address's when it has one
    share: Share


class Peers:
    """The bounds on reviews per connection and per address (see the module doc)."""

    def __init__(self, bounds: ReviewBounds, clock: Callable[[], float]) -> None:
        self._bounds = bounds
        self._clock = clock
        self._table: dict[str, _Tally] = {}  # least recently seen first

    def __len__(self) -> int:
        return len(self._table)

    def admit(self, peer: str) -> Admission:
        """One more review under way for the connection (tell finished() how it went);
        Unauthenticated or AuthUnavailable when it may not have another now."""
        bounds = self._bounds
        counted = [(self._tally(peer, bounds.per_connection), "this connection")]
        address = peer_address(peer)
        if address is not None:
            tally = self._tally(f"address {address}", bounds.per_address)
            counted.append((tally, f"this client's address ({address}, on any connection)"))
        now = self._clock()
        for tally, _ in counted:
            while tally.refusals and tally.refusals[0] <= now - bounds.window:
                tally.refusals.popleft()
        try:
            for tally, who in counted:
                refusals = tally.refusals
                if refusals and len(refusals) == refusals.maxlen:
                    wait = refusals[0] + bounds.window - now
                    raise Unauthenticated(
                        f"{who} sent {len(refusals)} bearer tokens in the last "
                        f"{bounds.window:.0f} s that the API server refused: other tokens "
                        f"k8sailor has not seen are refused from it without review for "
                        f"{wait:.0f} s more"
                    )
            for tally, who in counted:
                most = tally.refusals.maxlen or 0
                if len(tally.refusals) + tally.reviewing >= most:
                    raise AuthUnavailable(
                        f"{who} has {tally.reviewing} bearer tokens under review and "
                        f"{len(tally.refusals)} refused in the last {bounds.window:.0f} s, the "
                        f"most it may have ({most}): try again when they are answered"
                    )
        except (Unauthenticated, AuthUnavailable):
            # A new connection refused for its address's sake has nothing of its own to keep.
            self._forget_idle(tally for tally, _ in counted)
            raise
        for tally, _ in counted:
            tally.reviewing += 1
        # The address's turn when there is one: a client's connections together take one.
        return Admission(tuple(tally for tally, _ in counted), counted[-1][0].share)

    def finished(self, admission: Admission, *, refused: bool) -> None:
        now = self._clock()
        for tally in admission.tallies:
            tally.reviewing -= 1
            if refused:
                tally.refusals.append(now)
        if not refused:
            self._forget_idle(admission.tallies)

    def _forget_idle(self, tallies: Iterable[_Tally]) -> None:
        """Forget those with nothing held against them (a good caller leaves nothing behind)."""
        for tally in tallies:
            idle = not tally.reviewing and not tally.refusals
            if idle and self._table.get(tally.key) is tally:
                del self._table[tally.key]

    def _tally(self, key: str, limit: int) -> _Tally:
        tally = self._table.pop(key, None)
        if tally is None:
            tally = _Tally(key, limit)
            if len(self._table) >= self._bounds.peers:
                del self._table[next(iter(self._table))]
        self._table[key] = tally
        return tally


def peer_address(peer: str) -> str | None:
    """The client's IP address in a gRPC peer string ("ipv4:10.0.0.7:5000",
    "ipv6:%5Bfd00::7%5D:5000"), or None when it has none that tells clients apart: a Unix
    socket, or loopback (every caller through a proxy in the pod, a mesh sidecar or
    `kubectl port-forward`, arrives from there)."""
    kind, _, address = urllib.parse.unquote(peer).partition(":")
    if kind not in ("ipv4", "ipv6"):
        return None
    host = address.rsplit(":", 1)[0].strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        # One client holds a whole /64 (SLAAC, privacy addresses): it is one address here.
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)
