"""Who may do what: TLS, caller identity, and authorization by Kubernetes RBAC.

- :mod:`.identity`: pure parsing of who a certificate, SPIFFE ID or XFCC header names.
- :mod:`.tokens`: bearer tokens checked with cached TokenReviews.
- :mod:`.access`: per-type decisions from cached SubjectAccessReviews.
- :mod:`.cache`: the bounded, shared-miss cache both of them use.
- :mod:`.tls`: server credentials that follow rotated certificate files.
- :mod:`.settings`: the flags, and which combinations may be served where.
- :mod:`.gate`: the one gRPC-facing part, which the servicer calls.
"""
