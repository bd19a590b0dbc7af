"""The attestation service as a network service: upstream's REST and gRPC APIs and the command."""
