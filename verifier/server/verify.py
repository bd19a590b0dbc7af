"""`attestation-service verify`: check one evidence file from the command line, as the service would.

    attestation-service verify --tee snp --evidence report.bin --report-data HEX
        [--init-data-hash HEX] [--collateral PATH]... [--at TIME] [--policy FILE]
        [--option SECTION.KEY=JSON]... [-c CONFIG]

The evidence is upstream's evidence JSON, or raw bytes: an SNP report, a TDX or SGX quote. Each
`--collateral` is a folder (VCEKs in upstream's offline-store layout, `vcek/<hwid>/...`, and DCAP
collateral as PCS serves it: `tcbInfo.json`, `enclaveIdentity.json`, see `DirectorySource`), a PCS
Client Tool JSON file, or a VCEK/VLEK certificate; given any, nothing is fetched from AMD or Intel.
Prints `{"tee", "claims", "appraisal"}` as JSON and exits 0 when the evidence verifies (whatever the
appraisal says), else prints `{"tee", "error": {"reason", "message"}}` and exits 1; exit 2 for bad
arguments.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from verifier.errors import VerificationError
from verifier.options import merge
from verifier.policy import PolicyError
from verifier.server.config import ConfigError, ServerConfig, build_service, load_config

RAW_QUOTE_TEES = ("tdx", "sgx")
VERIFY_POLICY_ID = "verify"


def _hex(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not hex") from None


def _option(text: str) -> tuple[list[str], Any]:
    path, sep, value = text.partition("=")
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value  # a bare string (a URL, a time)
    if not sep or not path:
        raise argparse.ArgumentTypeError(f"{text[:60]!r} is not SECTION.KEY=VALUE")
    return path.split("."), parsed


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="attestation-service verify",
        description="Verify one evidence file and appraise its claims; exit 1 with the reason when it fails.",
    )
    parser.add_argument("--tee", required=True, help="TEE name as upstream spells it (snp, tdx, sgx, ...)")
    parser.add_argument("--evidence", required=True, type=Path, help="evidence JSON, or a raw report/quote")
    parser.add_argument("--report-data", required=True, type=_hex, help="expected report data (hex)")
    parser.add_argument("--init-data-hash", type=_hex, help="expected init data digest (hex)")
    parser.add_argument(
        "--collateral",
        type=Path,
        action="append",
        default=[],
        help="folder, PCS Client Tool JSON or VCEK/VLEK certificate; repeatable (offline: nothing fetched)",
    )
    parser.add_argument("--at", help="verify as of this RFC 3339 time (a fixed clock)")
    parser.add_argument("--policy", type=Path, help="Rego policy file (default: the built-in default_cpu)")
    parser.add_argument(
        "--option",
        type=_option,
        action="append",
        default=[],
        help="a verifier option, e.g. snp_verifier.required_vmpl=1 (value as JSON); repeatable",
    )
    parser.add_argument("-c", "--config-file", type=Path, help="attestation service JSON configuration")
    return parser.parse_args(argv)


def collateral_options(paths: Sequence[Path]) -> dict[str, Any]:
    """The `verifier_config` fragment that makes `paths` the only collateral sources."""
    if not paths:
        return {}
    vcek_sources: list[dict[str, str]] = []
    dcap: dict[str, str] = {}
    for path in paths:
        if path.is_dir():
            vcek_sources.append({"type": "OfflineStore", "path": str(path)})
            dcap["collateral_service"] = f"dir://{path}"
        elif path.suffix == ".json":
            dcap["collateral_service"] = path.resolve().as_uri()
        else:
            vcek_sources.append({"type": "File", "path": str(path)})
    options: dict[str, Any] = {"snp_verifier": {"vcek_sources": vcek_sources}}
    options["dcap_verifier"] = dcap or {"collateral_service": "none"}
    return options


def command_options(args: argparse.Namespace) -> dict[str, Any]:
    options = collateral_options(args.collateral)
    if args.at is not None:
        options["at"] = args.at
    for path, value in args.option:
        fragment: Any = value
        for key in reversed(path):
            fragment = {key: fragment}
        options = merge(options, fragment)
    return options


def evidence_bytes(tee: str, data: bytes) -> bytes:
    """Upstream's evidence JSON as given, or raw TDX/SGX quote bytes wrapped into it (an SNP report
    is accepted raw by its verifier)."""
    if tee not in RAW_QUOTE_TEES or data.lstrip()[:1] == b"{":
        return data
    quote = base64.b64encode(data).decode()
    return json.dumps({"cc_eventlog": None, "quote": quote} if tee == "tdx" else {"quote": quote}).encode()


def run(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    config = load_config(args.config_file) if args.config_file else ServerConfig()
    config.verifier_config = merge(config.verifier_config, command_options(args))
    service = build_service(config)
    policy_id = "default"
    if args.policy is not None:
        try:
            service.set_policy(
                f"{VERIFY_POLICY_ID}_{service.verifiers.tee_class(args.tee)}", args.policy.read_text()
            )
        except (OSError, ValueError, VerificationError, PolicyError) as exc:
            raise ConfigError(f"policy {args.policy}: {exc}") from None
        policy_id = VERIFY_POLICY_ID
    try:
        evidence = evidence_bytes(args.tee, args.evidence.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read {args.evidence}: {exc.strerror}") from None
    try:
        claims = service.verifiers.evaluate(args.tee, evidence, args.report_data, args.init_data_hash)
    except VerificationError as exc:
        message = str(exc).partition(": ")[2]
        return 1, {"tee": args.tee, "error": {"reason": exc.reason, "message": message}}
    try:
        appraisal = service.appraise(args.tee, claims, policy_id)
    except PolicyError as exc:
        raise ConfigError(f"appraisal: {exc}") from None
    return 0, {"tee": args.tee, "claims": claims, "appraisal": appraisal}


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    try:
        status, result = run(args)
    except ConfigError as exc:
        print(f"attestation-service verify: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return status
