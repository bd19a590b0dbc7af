"""aa.toml with upstream's keys, the aa_kbc_params fallback, init data for binding, and the
`attestation-agent` / `api-server-rest` commands."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import socket
import sys
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from podvm.attestation_agent.cli import agent_parser, api_server_parser, load_init_data
from podvm.attestation_agent.config import (
    AaConfig,
    KbsConfig,
    load_aa_config,
    parse_aa_config,
    parse_aa_kbc_params,
)
from podvm.attestation_agent.errors import ConfigError, InitDataError
from podvm.attestation_agent.initdata import from_digest, from_peerpod_files, from_toml_file
from protocols.initdata import encode_initdata

UPSTREAM_EXAMPLE = """
[token_configs]

[token_configs.coco_as]
url = "http://127.0.0.1:8000"

[token_configs.kbs]
url = "https://127.0.0.1:8080"
tee_key_algorithm = "ECDH-ES+A256KW-P256"
cert = '''
-----BEGIN CERTIFICATE-----
MIIDljCCAn6gAwIBAgIUR
-----END CERTIFICATE-----
'''

[eventlog_config]

init_pcr = 17
enable_eventlog = false

[log]
level = "info"
"""
INITDATA = """algorithm = "sha256"
version = "0.1.0"

[data]
"aa.toml" = '''
[token_configs.kbs]
url = 'http://10.0.0.1:8080'
'''
"""


def test_upstream_example_config() -> None:
    config = parse_aa_config(UPSTREAM_EXAMPLE)
    assert config.kbs is not None
    assert config.kbs.url == "https://127.0.0.1:8080"
    assert config.kbs.tee_key_algorithm == "ECDH-ES+A256KW-P256"
    assert config.kbs.cert is not None and "BEGIN CERTIFICATE" in config.kbs.cert
    assert config.log_level == "info"


def test_minimal_and_empty_configs() -> None:
    assert parse_aa_config("[token_configs.kbs]\nurl = 'http://kbs:8080'\n") == AaConfig(
        kbs=KbsConfig(url="http://kbs:8080")
    )
    assert parse_aa_config("") == AaConfig()
    rsa = parse_aa_config(
        "[token_configs.kbs]\nurl='http://k'\ntee_key_algorithm='RSA-OAEP-256'\n[log]\nlevel='WARN'"
    )
    assert rsa.kbs is not None and rsa.kbs.tee_key_algorithm == "RSA-OAEP-256" and rsa.log_level == "warn"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[token_configs", "TOML"),
        ("token_configs = 1", "table"),
        ("[token_configs]\nkbs = 'x'", "table"),
        ("[token_configs.kbs]\ncert = 'x'", "url is required"),
        ("[token_configs.kbs]\nurl = 8080", "string"),
        ("[token_configs.kbs]\nurl = 'ftp://kbs'", "http"),
        ("[token_configs.kbs]\nurl = 'http://k'\ntee_key_algorithm = 'RSA1_5'", "tee_key_algorithm"),
        ("[log]\nlevel = 'loud'", "log.level"),
    ],
)
def test_bad_configs(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_aa_config(text)


def test_unknown_keys_are_errors_naming_the_closest_known_key() -> None:
    text = (
        "[token_configs.kbs]\nurl = 'http://k'\ncerts = 'x'\n[eventlog_config]\ninit_pcrs = 17\n[logging]\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_aa_config(text)
    assert str(caught.value).splitlines() == [
        "aa.toml: token_configs.kbs.certs: unknown key (did you mean 'cert'?)",
        "aa.toml: eventlog_config.init_pcrs: unknown key (did you mean 'init_pcr'?)",
        "aa.toml: logging: unknown key (did you mean 'log'?)",
    ]


CDH_EXAMPLE = """socket = "unix:///run/confidential-containers/cdh.sock"
[kbc]
name = "cc_kbc"
url = "http://10.0.0.1:8080"
[[credentials]]
path = "/run/confidential-containers/cdh/kbs/test/file"
resource_uri = "kbs:///default/test/file"
[image]
max_concurrent_layer_downloads_per_image = 3
image_security_policy_uri = "kbs:///default/security-policy/test"
[image.registry_config]
unqualified-search-registries = ["docker.io"]
[image.image_pull_proxy]
https_proxy = "http://127.0.0.1:5432"
[log]
level = "info"
"""


def test_cdh_toml_beside_aa_toml_is_read_strictly(tmp_path: Path) -> None:
    aa, cdh = tmp_path / "aa.toml", tmp_path / "cdh.toml"
    aa.write_text("[token_configs.kbs]\nurl = 'http://10.0.0.1:8080'\n")
    cdh.write_text(CDH_EXAMPLE)
    assert load_aa_config(aa).kbs == KbsConfig(url="http://10.0.0.1:8080")
    aa.write_text("[log]\nlevel = 'debug'\n")  # no KBS in aa.toml: cdh.toml's stands in
    assert load_aa_config(aa) == AaConfig(kbs=KbsConfig(url="http://10.0.0.1:8080"), log_level="debug")
    cdh.write_text(CDH_EXAMPLE.replace("[kbc]\nname", "[kbc]\nkbs_certs = 'x'\nname"))
    with pytest.raises(
        ConfigError, match=r"cdh\.toml: kbc\.kbs_certs: unknown key \(did you mean 'kbs_cert'\?\)"
    ):
        load_aa_config(aa)
    aa.write_text("[token_configs.kbs]\nurl = 'http://elsewhere:8080'\n")
    cdh.write_text(CDH_EXAMPLE)
    with pytest.raises(ConfigError, match="one KBS"):
        load_aa_config(aa)
    cdh.write_text('[kbc]\nname = "offline_fs_kbc"\nurl = ""\n')  # no KBS: aa.toml's alone
    assert load_aa_config(aa).kbs == KbsConfig(url="http://elsewhere:8080")


@given(st.text(max_size=200))
def test_config_parser_only_raises_config_errors(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_aa_config(text)


def test_aa_kbc_params_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_aa_kbc_params("cc_kbc::http://10.0.0.1:8080") == AaConfig(
        kbs=KbsConfig(url="http://10.0.0.1:8080")
    )
    assert parse_aa_kbc_params("offline_fs_kbc::null") == AaConfig()
    with pytest.raises(ConfigError):
        parse_aa_kbc_params("cc_kbc")
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("console=ttyS0 agent.aa_kbc_params=cc_kbc::http://kbs.example:8080 quiet\n")
    monkeypatch.delenv("AA_KBC_PARAMS", raising=False)
    assert load_aa_config(None, cmdline).kbs == KbsConfig(url="http://kbs.example:8080")
    monkeypatch.setenv("AA_KBC_PARAMS", "cc_kbc::http://from-env:1")
    assert load_aa_config(None, cmdline).kbs == KbsConfig(url="http://from-env:1")
    monkeypatch.delenv("AA_KBC_PARAMS")
    assert load_aa_config(None, tmp_path / "no-cmdline") == AaConfig()
    with pytest.raises(ConfigError, match="cannot read"):
        load_aa_config(tmp_path / "missing.toml")
    (tmp_path / "aa.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_aa_config(tmp_path / "aa.toml")


def test_peerpod_initdata_files(tmp_path: Path) -> None:
    initdata, digest_file = tmp_path / "initdata", tmp_path / "initdata.digest"
    initdata.write_text(encode_initdata(INITDATA) + "\n")
    bound = from_peerpod_files(initdata, digest_file)
    assert bound.toml == INITDATA
    assert bound.digest == hashlib.sha256(INITDATA.encode()).digest()
    digest_file.write_text(hashlib.sha256(INITDATA.encode()).hexdigest())
    assert from_peerpod_files(initdata, digest_file) == bound
    digest_file.write_text("00" * 32)
    with pytest.raises(InitDataError, match="does not match"):
        from_peerpod_files(initdata, digest_file)
    initdata.write_text("not base64 !!")
    with pytest.raises(InitDataError, match="base64"):
        from_peerpod_files(initdata, digest_file)
    with pytest.raises(InitDataError, match="cannot read"):
        from_peerpod_files(tmp_path / "absent", digest_file)


def test_upstream_initdata_flags(tmp_path: Path) -> None:
    toml = tmp_path / "initdata.toml"
    toml.write_text(INITDATA)
    assert from_toml_file(toml).digest == hashlib.sha256(INITDATA.encode()).digest()
    toml.write_text("algorithm = 'md5'\n")
    with pytest.raises(InitDataError, match="algorithm"):
        from_toml_file(toml)
    digest = hashlib.sha384(b"x").digest()
    assert from_digest(base64.b64encode(digest).decode()).digest == digest
    for bad in ("!!!", base64.b64encode(b"short").decode()):
        with pytest.raises(InitDataError):
            from_digest(bad)


def test_command_flags_follow_upstream(tmp_path: Path) -> None:
    args = agent_parser().parse_args(["-c", "/run/peerpod/aa.toml", "-i", "AAAA"])
    assert (args.config_file, args.initdata_digest, args.bind, args.features) == (
        Path("/run/peerpod/aa.toml"),
        "AAAA",
        "127.0.0.1:8006",
        "all",
    )
    args = api_server_parser().parse_args(["-b", "127.0.0.1:9000", "-f", "all", "--aa-config", "aa.toml"])
    assert (args.bind, args.features, args.config_file) == ("127.0.0.1:9000", "all", Path("aa.toml"))
    assert api_server_parser().parse_args([]).features == "resource"
    with pytest.raises(SystemExit):
        agent_parser().parse_args(["-t", "a.toml", "-i", "AAAA"])
    initdata = tmp_path / "initdata"
    initdata.write_text(encode_initdata(INITDATA))
    args = agent_parser().parse_args(["--peerpod-initdata", str(initdata)])
    bound = load_init_data(args)
    assert bound is not None and bound.toml == INITDATA
    assert load_init_data(agent_parser().parse_args(["--peerpod-initdata", str(tmp_path / "none")])) is None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_attestation_agent_command_serves_the_api(tmp_path: Path) -> None:
    """The real command in a subprocess: no TEE here, so the sample attester answers."""
    config = tmp_path / "aa.toml"
    config.write_text("[token_configs.kbs]\nurl = 'http://127.0.0.1:9'\n")
    initdata = tmp_path / "initdata"
    initdata.write_text(encode_initdata(INITDATA))
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "podvm.attestation_agent.cli",
        "-c",
        str(config),
        "--peerpod-initdata",
        str(initdata),
        "--bind",
        f"127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    try:
        body = await _get_when_up(f"http://127.0.0.1:{port}/aa/evidence?runtime_data=abc", proc)
        assert json.loads(body) == {"svn": "1", "report_data": base64.b64encode(b"abc").decode()}
    finally:
        proc.terminate()
        _, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()


async def test_attestation_agent_command_fails_closed_on_bad_init_data(tmp_path: Path) -> None:
    initdata = tmp_path / "initdata"
    initdata.write_text(encode_initdata(INITDATA))
    (tmp_path / "initdata.digest").write_text("00" * 32)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "podvm.attestation_agent.cli",
        "--peerpod-initdata",
        str(initdata),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await proc.communicate()
    assert proc.returncode == 1
    assert b"does not match" in stderr


async def _get_when_up(url: str, proc: asyncio.subprocess.Process) -> bytes:
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            if proc.returncode is not None:
                raise AssertionError(f"agent exited with {proc.returncode}")
            try:
                async with http.get(url) as resp:
                    assert resp.status == 200
                    return await resp.read()
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    raise AssertionError("the agent did not start listening")
