"""Attestation service: one verifier per TEE, reference values, policy and EAR tokens."""
