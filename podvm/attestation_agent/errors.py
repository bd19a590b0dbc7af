"""Errors of the attestation agent, one type per way it can fail."""

from __future__ import annotations


class AttestationAgentError(Exception):
    """Base class of every attestation agent error."""


class ConfigError(AttestationAgentError):
    """aa.toml (or the kernel command line's aa_kbc_params) is unusable."""


class AttesterError(AttestationAgentError):
    """The TEE did not produce evidence (device missing, driver error, malformed output)."""


class InitDataError(AttestationAgentError):
    """The init data cannot be read, or its digest disagrees with what the TEE measured."""
