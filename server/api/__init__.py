"""The gRPC edge: servicers, proto <-> domain conversion, status mapping, health."""
