"""Who may do what: TLS, caller identity, and authorization by Kubernetes RBAC.

- :mod:`.identity`: pure parsing of who a certificate, SPIFFE ID or XFCC header names.
- :mod:`.tokens`: bearer tokens checked with cached TokenReviews.
- :mod:`.review_bounds`: what tokens k8sailor has not seen may cost in TokenReviews, per
  connection and per client address.
- :mod:`.access`: per-type decisions from cached SubjectAccessReviews.
- :mod:`.rights`: what was decided the caller may do, as a value the domain flows read
  through their own protocol (auth does not import the domain).
- :mod:`.cache`: the bounded, shared-miss cache both kinds of review use.
- :mod:`.errors`: why a call was not let in (each maps to one gRPC status in :mod:`.gate`).
- :mod:`.tls`: server credentials that follow rotated certificate files.
- :mod:`.settings`: the flags, and which combinations may be served where.
- :mod:`.gate`: the one gRPC-facing part, which the edge and the servicers call.
"""
