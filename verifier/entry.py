"""Console-script entry point of `attestation-service` (see protocols.extras for why it is thin)."""

from protocols.extras import launcher

attestation_service = launcher("attestation-service", "verifier.server.cli", extra="attestation")
