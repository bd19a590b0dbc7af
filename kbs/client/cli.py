"""`kbs-client`: upstream's command-line client for the KBS (trustee `tools/kbs-client`).

    kbs-client [--url URL] [--cert-file PEM] attest [--tee-key-file PEM] [INIT_DATA]
    kbs-client ... get-resource --path repo/type/tag [--tee-key-file PEM] [--attestation-token FILE]
                   [INIT_DATA]
    kbs-client ... config [--admin-token-file FILE | --auth-private-key PEM] SUBCOMMAND
        set-resource --path P --resource-file F | delete-resource --path P
        set-resource-policy (--policy-file F | --allow-all | --deny-all | --affirming | --default)
        set-attestation-policy [--type rego] [--id default_cpu] --policy-file F
        set-sample-reference-value NAME VALUE [--as-integer | --as-bool] [--as-single-value]
        get-reference-value --id ID

Guest commands attest with the TEE found on this machine (the sample TEE when there is none).
Resources are printed base64-encoded, tokens as they are, as upstream does.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from kbs.client.admin import DEFAULT_ADMIN_ROLE, AdminClient, mint_admin_token
from protocols import version
from protocols.kbs_client.errors import KbsClientError
from protocols.kbs_client.rcar import EvidenceProvider, KbsClient
from protocols.kbs_client.teekey import TeeKeyPair

PROG = "kbs-client"
DEFAULT_URL = "http://127.0.0.1:8080"
HOME_ADMIN_TOKEN = Path("~/.trustee/admin-token")
log = logging.getLogger(PROG)


class CliError(Exception):
    """A usage problem found after parsing (unreadable file, missing companion flag)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="A command line client tool for KBS APIs.")
    parser.add_argument("--url", default=DEFAULT_URL, help="the KBS server root URL (default: %(default)s)")
    parser.add_argument("--cert-file", type=Path, help="custom root certificate (PEM) of an HTTPS KBS")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    attest = sub.add_parser("attest", help="attest and print the attestation token")
    attest.add_argument("--tee-key-file", type=Path, help="TEE private key (PEM); default: a new key pair")
    attest.add_argument("init_data", nargs="?", help="init-data plaintext (TOML) measured at boot")

    get = sub.add_parser("get-resource", help="attest (or use a token) and print a resource, base64-encoded")
    get.add_argument("--path", required=True, help="resource path, e.g. my_repo/resource_type/123abc")
    get.add_argument("--tee-key-file", type=Path, help="TEE private key (PEM); default: a new key pair")
    get.add_argument(
        "--attestation-token",
        type=Path,
        help="use this attestation token (needs the --tee-key-file it binds)",
    )
    get.add_argument("init_data", nargs="?", help="init-data plaintext (TOML) measured at boot")

    config = sub.add_parser("config", help="set and configure KBS (admin API)")
    auth = config.add_mutually_exclusive_group()
    auth.add_argument(
        "--admin-token-file", type=Path, help=f"admin bearer token (default: {HOME_ADMIN_TOKEN})"
    )
    auth.add_argument(
        "--auth-private-key",
        type=Path,
        help="admin private key (Ed25519 or P-256 PEM) to sign an admin token",
    )
    config.add_argument(
        "--role", default=DEFAULT_ADMIN_ROLE, help="role claim of a token signed here (default: %(default)s)"
    )
    config.add_argument("--issuer", help="iss claim of a token signed here (when the KBS checks one)")
    _config_commands(config.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND"))
    return parser


def _config_commands(sub: Any) -> None:
    att = sub.add_parser("set-attestation-policy", help="set an attestation (verification) policy")
    att.add_argument("--type", dest="policy_type", default="rego", help="policy type (default: %(default)s)")
    att.add_argument("--id", dest="policy_id", default="default_cpu", help="policy id (default: %(default)s)")
    att.add_argument("--policy-file", type=Path, required=True)

    res_policy = sub.add_parser("set-resource-policy", help="set the resource policy")
    choice = res_policy.add_mutually_exclusive_group(required=True)
    choice.add_argument("--policy-file", type=Path)
    for name, text in (
        ("allow-all", "release every resource to any attested requester"),
        ("deny-all", "release nothing"),
        ("affirming", "release only when every appraisal is affirming"),
        ("default", "the KBS default: any TEE but the sample one"),
    ):
        choice.add_argument(f"--{name}", action="store_true", help=text)

    set_res = sub.add_parser("set-resource", help="set a confidential resource")
    set_res.add_argument("--path", required=True, help="resource path, e.g. my_repo/resource_type/123abc")
    set_res.add_argument("--resource-file", type=Path, required=True)

    delete = sub.add_parser("delete-resource", help="delete a confidential resource")
    delete.add_argument("--path", required=True)

    get_rv = sub.add_parser("get-reference-value", help="print a reference value")
    get_rv.add_argument("--id", dest="rv_id", required=True)

    rv = sub.add_parser("set-sample-reference-value", help="register a reference value (sample extractor)")
    rv.add_argument("name")
    rv.add_argument("value")
    kind = rv.add_mutually_exclusive_group()
    kind.add_argument("--as-integer", action="store_true")
    kind.add_argument("--as-bool", action="store_true")
    rv.add_argument("--as-single-value", action="store_true", help="register the value itself, not [value]")


def builtin_policy(name: str) -> bytes:
    """The rego of a built-in resource policy (`default` is the KBS's own default)."""
    if name == "default":
        return resources.files("kbs").joinpath("default_resource_policy.rego").read_bytes()
    return resources.files("kbs.client").joinpath("policies").joinpath(f"{name}.rego").read_bytes()


def sample_reference_value(value: str, *, as_integer: bool, as_bool: bool, as_single_value: bool) -> Any:
    parsed: Any = value
    if as_integer:
        try:
            parsed = int(value)
        except ValueError:
            raise CliError(f"{value!r} is not an integer") from None
    elif as_bool:
        if value not in ("true", "false"):
            raise CliError(f"{value!r} is not true or false")
        parsed = value == "true"
    return parsed if as_single_value else [parsed]


async def run(args: argparse.Namespace) -> str:
    """Carry out one command; returns what to print."""
    ca_pem = _read_text(args.cert_file) if args.cert_file else None
    if args.command == "config":
        return await _config(args, ca_pem)
    tee_key = TeeKeyPair.from_pem(_read_bytes(args.tee_key_file)) if args.tee_key_file else None
    if args.command == "get-resource" and args.attestation_token is not None:
        if tee_key is None:
            raise CliError("--attestation-token needs --tee-key-file: the key the token's tee-pubkey names")
        token = _read_text(args.attestation_token).strip()
        async with KbsClient(args.url, tee_key=tee_key, token=token, ca_pem=ca_pem) as client:
            return base64.b64encode(await client.get_resource(args.path)).decode("ascii")
    async with KbsClient(
        args.url,
        evidence_provider=_local_evidence(),
        tee_key=tee_key,
        init_data=args.init_data,
        ca_pem=ca_pem,
    ) as client:
        if args.command == "attest":
            return (await client.get_token())[0].content
        return base64.b64encode(await client.get_resource(args.path)).decode("ascii")


async def _config(args: argparse.Namespace, ca_pem: str | None) -> str:
    async with AdminClient(args.url, admin_token=_admin_token(args), ca_pem=ca_pem) as admin:
        command = args.config_command
        if command == "set-attestation-policy":
            policy = _read_bytes(args.policy_file)
            await admin.set_attestation_policy(policy, policy_type=args.policy_type, policy_id=args.policy_id)
            return f"Set attestation policy success \n policy: {base64.b64encode(policy).decode()}"
        if command == "set-resource-policy":
            policy = _resource_policy(args)
            await admin.set_resource_policy(policy)
            return f"Set resource policy success \n policy: {base64.b64encode(policy).decode()}"
        if command == "set-resource":
            data = _read_bytes(args.resource_file)
            await admin.set_resource(args.path, data)
            return f"Set resource success \n resource: {base64.b64encode(data).decode()}"
        if command == "delete-resource":
            await admin.delete_resource(args.path)
            return "Delete resource success"
        if command == "get-reference-value":
            return repr(await admin.get_reference_value(args.rv_id))
        value = sample_reference_value(
            args.value, as_integer=args.as_integer, as_bool=args.as_bool, as_single_value=args.as_single_value
        )
        await admin.set_sample_reference_value(args.name, value)
        return "Reference Values Updated"


def _resource_policy(args: argparse.Namespace) -> bytes:
    if args.policy_file is not None:
        return _read_bytes(args.policy_file)
    name = next(n for n in ("allow_all", "deny_all", "affirming", "default") if getattr(args, n))
    return builtin_policy(name)


def _admin_token(args: argparse.Namespace) -> str | None:
    if args.auth_private_key is not None:
        return mint_admin_token(_read_bytes(args.auth_private_key), role=args.role, issuer=args.issuer)
    path = args.admin_token_file
    if path is None:
        default = HOME_ADMIN_TOKEN.expanduser()
        if not default.exists():
            log.warning(
                "no admin token: sending anonymous admin requests (only an insecure KBS accepts them)"
            )
            return None
        path = default
    return _read_text(path).strip()


def _local_evidence() -> EvidenceProvider:
    # The guest commands need the pod VM's attesters; imported here so admin use does not load them.
    from podvm.attestation_agent.agent import AttesterEvidence
    from podvm.attestation_agent.detect import detect_attester

    return AttesterEvidence(detect_attester())


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None


def _read_text(path: Path) -> str:
    try:
        return _read_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise CliError(f"{path} is not UTF-8 text") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = version.parse_args(build_parser(), argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        output = asyncio.run(run(args))
    except (KbsClientError, CliError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    print(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
