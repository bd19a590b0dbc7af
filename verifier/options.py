"""Verifier options: upstream's `verifier_config` keys and ours, for the config file and per call.

```
verifier_config = {
  "snp_verifier": {
    "vcek_sources": [{"type": "KDS", "base_url": ...} | {"type": "OfflineStore", "path": ...}],  # upstream
    "required_vmpl": 0,          # 0..3, or null for any; upstream refuses VMPL != 0 (VLEK clouds: 1)
    "min_report_version": 2,     # 2..5; upstream accepts 3..5
    "allow_debug": true          # false: a guest policy that allows debugging is refused here
  },
  "dcap_verifier": {             # TDX and SGX
    "collateral_service": "https://api.trustedservices.intel.com/sgx/certification/v4/",  # upstream;
                                 # or "file://<PCS Client Tool JSON>"; ours: "dir://<folder>", "none"
    "tcb_update_type": "early",  # upstream: early | standard  ("use_secure_cert": upstream's, unused)
    "accept_stale_collateral": false,       # collateral past nextUpdate (then reported: "1")
    "accept_unverified_collateral": false,  # collateral that came without its issuer chain
    "collateral_refetch_after_s": 3600,     # ask the source again this long after loading stale collateral
    "allow_debug": true          # false: a debug TD / debug enclave is refused here
  },
  "at": "2026-01-01T00:00:00Z",  # ours: a fixed clock, to re-check stored evidence as of a time
  "nvidia_verifier": ..., "tpm_verifier": ...  # upstream's, for verifiers this build has not: unused
}
```
`check` validates a whole section (unknown keys name the closest known one); per-call options are a
fragment of it, merged over the configured one section by section (`merge`). The option readers
return keyword arguments of `SnpOptions` / `DcapOptions`, so this module loads no verifier.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from protocols.strictconfig import Table, check_keys

SNP, DCAP, AT = "snp_verifier", "dcap_verifier", "at"
VERIFIER_CONFIG = Table(
    {
        SNP: Table(dict.fromkeys(("vcek_sources", "required_vmpl", "min_report_version", "allow_debug"))),
        DCAP: Table(
            dict.fromkeys(
                (
                    "collateral_service",
                    "tcb_update_type",
                    "use_secure_cert",
                    "accept_stale_collateral",
                    "accept_unverified_collateral",
                    "collateral_refetch_after_s",
                    "allow_debug",
                )
            )
        ),
        AT: None,
        "nvidia_verifier": None,
        "tpm_verifier": None,
    }
)


class OptionsError(ValueError):
    """A verifier option is unknown or has the wrong type or range; the message names it."""


def _section(config: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = config.get(name) or {}
    if not isinstance(section, Mapping):
        raise OptionsError(f"verifier_config.{name} must be an object")
    return section


def _value(section: Mapping[str, Any], name: str, key: str, kind: type | tuple[type, ...], what: str) -> Any:
    """`section[key]` (None when absent), which must be a `kind` that is not a bool unless asked."""
    value = section.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise OptionsError(f"verifier_config.{name}.{key} must be {what}")
    return value


def _given(**options: Any) -> dict[str, Any]:
    return {key: value for key, value in options.items() if value is not None}


def snp_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of `SnpOptions` (only those given)."""
    section = _section(config, SNP)
    options = _given(
        min_report_version=_value(section, SNP, "min_report_version", int, "an integer 2..5"),
        allow_debug=_value(section, SNP, "allow_debug", bool, "true or false"),
    )
    if not 2 <= options.get("min_report_version", 2) <= 5:
        raise OptionsError(f"verifier_config.{SNP}.min_report_version must be an integer 2..5")
    if "required_vmpl" in section:
        vmpl = section["required_vmpl"]
        if vmpl is not None and (isinstance(vmpl, bool) or not isinstance(vmpl, int) or not 0 <= vmpl <= 3):
            raise OptionsError(f"verifier_config.{SNP}.required_vmpl must be 0..3 or null (any VMPL)")
        options["required_vmpl"] = vmpl
    return options


def dcap_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of `DcapOptions` (only those given)."""
    section = _section(config, DCAP)
    flag = "true or false"
    options = _given(
        accept_stale_collateral=_value(section, DCAP, "accept_stale_collateral", bool, flag),
        accept_unverified_collateral=_value(section, DCAP, "accept_unverified_collateral", bool, flag),
        allow_debug=_value(section, DCAP, "allow_debug", bool, flag),
    )
    refetch = _value(section, DCAP, "collateral_refetch_after_s", (int, float), "a number of seconds")
    if refetch is not None:
        if not 0 <= refetch < 10**9:
            raise OptionsError(f"verifier_config.{DCAP}.collateral_refetch_after_s must be 0 or more")
        options["refetch_after"] = timedelta(seconds=refetch)
    return options


def dcap_source_settings(config: Mapping[str, Any]) -> dict[str, str]:
    """Upstream's collateral source keys of `dcap_verifier` (for `source_from_config`)."""
    section = _section(config, DCAP)
    return _given(
        **{
            key: _value(section, DCAP, key, str, "a string")
            for key in ("collateral_service", "tcb_update_type")
        }
    )


def clock(config: Mapping[str, Any]) -> Callable[[], datetime] | None:
    """The fixed clock `at` asks for (None: the real one)."""
    text = config.get(AT)
    if text is None:
        return None
    if not isinstance(text, str):
        raise OptionsError("verifier_config.at must be an RFC 3339 time")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise OptionsError(f"verifier_config.at {text[:40]!r} is not an RFC 3339 time") from None
    fixed = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return lambda: fixed


def check(config: Mapping[str, Any]) -> None:
    """Raise `OptionsError` (or strictconfig's error, also a ValueError) for any bad key or value."""
    check_keys(config, VERIFIER_CONFIG, "verifier_config")
    snp_options(config)
    dcap_options(config)
    dcap_source_settings(config)
    clock(config)


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`overrides` over `base`, section by section (`{"snp_verifier": {"required_vmpl": 1}}` keeps
    the configured VCEK sources)."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged
