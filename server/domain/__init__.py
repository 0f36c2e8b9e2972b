"""What a request means, without gRPC or HTTP: outcomes; the create, apply, delete, list flows."""
