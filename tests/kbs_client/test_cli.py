"""`kbs-client` against the real KBS: admin commands with upstream's flags, then the guest commands
(this machine has no TEE, so the sample attester answers), in a subprocess like an operator runs it."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from kbs.client.cli import CliError, build_parser, builtin_policy, sample_reference_value
from protocols.kbs_client.teekey import TeeKeyPair
from tests.kbs.support import AFFIRMING_POLICY, SAMPLE_TRUSTING_POLICY, RunningKbs, start_kbs

SECRET = b"cli secret \x00"
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def kbs(tmp_path: Path) -> AsyncIterator[RunningKbs]:
    server = await start_kbs(tmp_path)
    yield server
    await server.runner.cleanup()


async def kbs_client(url: str, *args: str, home: Path | None = None) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    if home is not None:
        env["HOME"] = str(home)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kbs.client.cli",
        "--url",
        url,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def admin_key_file(server: RunningKbs, tmp_path: Path) -> Path:
    path = tmp_path / "admin-private.pem"
    path.write_bytes(
        server.admin.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path


async def test_operator_flow(kbs: RunningKbs, tmp_path: Path) -> None:
    key = admin_key_file(kbs, tmp_path)
    admin = ["config", "--auth-private-key", str(key), "--issuer", "test-admin"]
    resource = tmp_path / "secret.bin"
    resource.write_bytes(SECRET)
    attestation_policy = tmp_path / "attestation.rego"
    attestation_policy.write_text(SAMPLE_TRUSTING_POLICY)

    code, out, err = await kbs_client(
        kbs.url, *admin, "set-resource", "--path", "default/cli/secret", "--resource-file", str(resource)
    )
    assert code == 0, err
    assert out == f"Set resource success \n resource: {base64.b64encode(SECRET).decode()}\n"
    code, _, err = await kbs_client(
        kbs.url, *admin, "set-attestation-policy", "--policy-file", str(attestation_policy)
    )
    assert code == 0, err

    # The KBS default policy refuses the sample TEE ...
    code, out, err = await kbs_client(kbs.url, "get-resource", "--path", "default/cli/secret")
    assert code == 1 and "PolicyDeny" in err and out == ""
    # ... --allow-all releases it ...
    code, _, err = await kbs_client(kbs.url, *admin, "set-resource-policy", "--allow-all")
    assert code == 0, err
    code, out, err = await kbs_client(kbs.url, "get-resource", "--path", "default/cli/secret")
    assert code == 0, err
    assert base64.b64decode(out) == SECRET
    # ... and so does a policy file (affirming), with the token from `attest` and its key (passport).
    policy = tmp_path / "resource.rego"
    policy.write_text(AFFIRMING_POLICY)
    code, _, err = await kbs_client(kbs.url, *admin, "set-resource-policy", "--policy-file", str(policy))
    assert code == 0, err
    tee_key = tmp_path / "tee.pem"
    tee_key.write_text(TeeKeyPair.generate().to_pem())
    code, token, err = await kbs_client(kbs.url, "attest", "--tee-key-file", str(tee_key))
    assert code == 0, err
    token_file = tmp_path / "token"
    token_file.write_text(token)
    code, out, err = await kbs_client(
        kbs.url,
        "get-resource",
        "--path",
        "default/cli/secret",
        "--tee-key-file",
        str(tee_key),
        "--attestation-token",
        str(token_file),
    )
    assert code == 0, err
    assert base64.b64decode(out) == SECRET
    code, _, err = await kbs_client(
        kbs.url, "get-resource", "--path", "default/cli/secret", "--attestation-token", str(token_file)
    )
    assert code == 1 and "--tee-key-file" in err

    # --deny-all, reference values, deletion
    code, _, err = await kbs_client(kbs.url, *admin, "set-resource-policy", "--deny-all")
    assert code == 0, err
    code, _, err = await kbs_client(kbs.url, "get-resource", "--path", "default/cli/secret")
    assert code == 1 and "PolicyDeny" in err
    code, out, err = await kbs_client(kbs.url, *admin, "set-sample-reference-value", "svn", "1")
    assert (code, out) == (0, "Reference Values Updated\n"), err
    code, out, err = await kbs_client(kbs.url, *admin, "get-reference-value", "--id", "svn")
    assert (code, out) == (0, "['1']\n"), err
    code, out, err = await kbs_client(kbs.url, *admin, "delete-resource", "--path", "default/cli/secret")
    assert (code, out) == (0, "Delete resource success\n"), err


async def test_admin_token_file_and_anonymous_refusal(kbs: RunningKbs, tmp_path: Path) -> None:
    token = tmp_path / "admin-token"
    token.write_text(kbs.admin.token() + "\n")
    code, _, err = await kbs_client(
        kbs.url, "config", "--admin-token-file", str(token), "set-resource-policy", "--default"
    )
    assert code == 0, err
    home = tmp_path / "home"
    (home / ".trustee").mkdir(parents=True)
    code, _, err = await kbs_client(kbs.url, "config", "set-resource-policy", "--default", home=home)
    assert code == 1 and "AdminAuthAccess" in err and "anonymous" in err
    (home / ".trustee" / "admin-token").write_text(kbs.admin.token())
    code, _, err = await kbs_client(kbs.url, "config", "set-resource-policy", "--deny-all", home=home)
    assert code == 0, err


async def test_unreachable_kbs_and_bad_files(tmp_path: Path) -> None:
    code, _, err = await kbs_client(
        "http://127.0.0.1:9",
        "config",
        "--admin-token-file",
        str(tmp_path / "none"),
        "delete-resource",
        "--path",
        "a/b/c",
    )
    assert code == 1 and "cannot read" in err
    code, _, err = await kbs_client("http://127.0.0.1:9", "get-resource", "--path", "a/b")
    assert code == 1 and "three segments" in err


def test_parser_matches_upstream_flags() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["get-resource", "--path", "a/b/c", "--tee-key-file", "k.pem", "some = 'init data'"]
    )
    assert (args.url, args.path, args.tee_key_file, args.init_data) == (
        "http://127.0.0.1:8080",
        "a/b/c",
        Path("k.pem"),
        "some = 'init data'",
    )
    args = parser.parse_args(["--url", "https://kbs:8080", "--cert-file", "ca.pem", "attest"])
    assert (args.url, args.cert_file, args.init_data) == ("https://kbs:8080", Path("ca.pem"), None)
    args = parser.parse_args(["config", "set-attestation-policy", "--policy-file", "p.rego"])
    assert (args.policy_type, args.policy_id) == ("rego", "default_cpu")
    args = parser.parse_args(
        ["config", "set-sample-reference-value", "major_version", "1", "--as-integer", "--as-single-value"]
    )
    assert (args.name, args.value, args.as_integer, args.as_single_value) == (
        "major_version",
        "1",
        True,
        True,
    )
    for bad in (
        ["config", "set-resource-policy"],
        ["config", "set-resource-policy", "--allow-all", "--deny-all"],
        [
            "config",
            "--admin-token-file",
            "t",
            "--auth-private-key",
            "k",
            "delete-resource",
            "--path",
            "a/b/c",
        ],
        ["config", "set-sample-reference-value", "x", "1", "--as-integer", "--as-bool"],
    ):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def test_sample_reference_values() -> None:
    assert sample_reference_value("1", as_integer=False, as_bool=False, as_single_value=False) == ["1"]
    assert sample_reference_value("1", as_integer=True, as_bool=False, as_single_value=True) == 1
    assert sample_reference_value("true", as_integer=False, as_bool=True, as_single_value=False) == [True]
    for value, kind in (
        ("x", {"as_integer": True, "as_bool": False}),
        ("yes", {"as_integer": False, "as_bool": True}),
    ):
        with pytest.raises(CliError):
            sample_reference_value(value, as_single_value=False, **kind)


def test_builtin_policies_are_rego() -> None:
    for name in ("allow_all", "deny_all", "affirming", "default"):
        text = builtin_policy(name).decode()
        assert "package policy" in text and "default allow" in text
