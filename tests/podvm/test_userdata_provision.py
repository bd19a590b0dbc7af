"""Provisioning: allow-listed atomic writes, initdata materialisation and digest, the CLI."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from podvm.userdata.cli import main
from podvm.userdata.errors import ProvisionError
from podvm.userdata.fsutil import atomic_write
from podvm.userdata.provision import (
    ProvisionConfig,
    apply_initdata,
    provision_files,
    write_user_files,
)
from podvm.userdata.sources import SourceSettings
from protocols.cloudconfig import WriteFile, render_cloud_config
from protocols.initdata import DEFAULT_INITDATA_TOML, encode_initdata
from tests.fakes.imds import FakeImds, serve_imds

SECRET_KEY = "-----BEGIN PRIVATE KEY-----\nTOPSECRETKEYMATERIAL\n-----END PRIVATE KEY-----\n"
APF_JSON = json.dumps({"tls-server-key": SECRET_KEY}) + "\n"
INITDATA_TOML = """algorithm = "sha512"
version = "0.1.0"

[data]
"aa.toml" = '''
[token_configs.kbs]
url = 'http://10.0.0.1:8080'
'''
"cdh.toml" = '''
socket = 'unix:///run/confidential-containers/cdh.sock'
'''
"policy.rego" = '''
package agent_policy
'''
"../../etc/shadow" = "root::0:0"
"evil.sh" = "rm -rf /"
"""


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_writes_only_allow_listed_paths(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = [
        WriteFile("/run/peerpod/apf.json", APF_JSON),
        WriteFile("/run/peerpod/scratch-space.marker", ""),
        WriteFile("/run/peerpod/../../etc/x", "pwned"),
        WriteFile("/etc/passwd", "pwned"),
        WriteFile("run/peerpod/apf.json", "relative"),
        WriteFile("//run/peerpod/aa.toml", "doubled slash"),
        WriteFile("/run/peerpod/agent-config.toml", "not allowed either"),
    ]
    with caplog.at_level(logging.INFO):
        written = write_user_files(files, tmp_path)
    assert written == ["/run/peerpod/apf.json", "/run/peerpod/scratch-space.marker"]
    assert (tmp_path / "run/peerpod/apf.json").read_text() == APF_JSON
    assert (tmp_path / "run/peerpod/scratch-space.marker").read_bytes() == b""
    assert not (tmp_path / "etc").exists()
    assert sorted(p.name for p in (tmp_path / "run/peerpod").iterdir()) == [
        "apf.json",
        "scratch-space.marker",
    ]
    assert "refusing to write '/run/peerpod/../../etc/x'" in caplog.text
    assert "TOPSECRET" not in caplog.text


def test_files_are_0644_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_user_files([WriteFile("/run/peerpod/auth.json", "{}\n")], tmp_path)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "run/peerpod/auth.json") == 0o644


def test_atomic_write_replaces_instead_of_truncating(tmp_path: Path) -> None:
    target = tmp_path / "d" / "apf.json"
    atomic_write(target, b"old complete content")
    with target.open("rb") as reader:
        atomic_write(target, b"new")
        # A reader that opened the old file still sees all of it: the new file was renamed in.
        assert reader.read() == b"old complete content"
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["apf.json"]


def test_failed_write_leaves_no_temp_file(tmp_path: Path) -> None:
    blocker = tmp_path / "run" / "peerpod" / "apf.json"
    blocker.mkdir(parents=True)  # a directory where the file should go: rename fails
    with pytest.raises(ProvisionError, match="cannot write"):
        write_user_files([WriteFile("/run/peerpod/apf.json", "{}")], tmp_path)
    assert [p.name for p in blocker.parent.iterdir()] == ["apf.json"]


def test_initdata_entries_and_digest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_user_files([WriteFile("/run/peerpod/initdata", encode_initdata(INITDATA_TOML) + "\n")], tmp_path)
    with caplog.at_level(logging.INFO):
        initdata = apply_initdata(tmp_path)
    peerpod = tmp_path / "run/peerpod"
    digest = hashlib.sha512(INITDATA_TOML.encode()).hexdigest()
    assert initdata.digest == digest
    assert (peerpod / "initdata.digest").read_text() == digest
    assert (peerpod / "aa.toml").read_text() == "[token_configs.kbs]\nurl = 'http://10.0.0.1:8080'\n"
    assert (peerpod / "cdh.toml").read_text() == "socket = 'unix:///run/confidential-containers/cdh.sock'\n"
    assert (peerpod / "policy.rego").read_text() == "package agent_policy\n"
    assert sorted(p.name for p in peerpod.iterdir()) == [
        "aa.toml",
        "cdh.toml",
        "initdata",
        "initdata.digest",
        "policy.rego",
    ]
    assert not (tmp_path / "etc").exists()
    assert "refusing to write initdata entry '../../etc/shadow'" in caplog.text
    assert "10.0.0.1" not in caplog.text


def test_default_initdata_written_when_absent(tmp_path: Path) -> None:
    apply_initdata(tmp_path)
    peerpod = tmp_path / "run/peerpod"
    assert (peerpod / "initdata").read_text() == encode_initdata(DEFAULT_INITDATA_TOML)
    assert (peerpod / "aa.toml").read_bytes() == b""
    expected = hashlib.sha256(DEFAULT_INITDATA_TOML.encode()).hexdigest()
    assert (peerpod / "initdata.digest").read_text() == expected


def test_bad_initdata_fails_without_digest(tmp_path: Path) -> None:
    write_user_files([WriteFile("/run/peerpod/initdata", "bm90IGd6aXA=\n")], tmp_path)
    with pytest.raises(ProvisionError, match="/run/peerpod/initdata: initdata is not gzip"):
        apply_initdata(tmp_path)
    assert not (tmp_path / "run/peerpod/initdata.digest").exists()


def test_provision_from_imds(tmp_path: Path) -> None:
    user_data = render_cloud_config(
        [
            WriteFile("/run/peerpod/apf.json", APF_JSON),
            WriteFile("/run/peerpod/initdata", encode_initdata(INITDATA_TOML)),
            WriteFile("/etc/ssh/sshd_config", "PermitRootLogin yes\n"),
        ]
    )
    with serve_imds(FakeImds(user_data=user_data.encode(), script=[404])) as imds:
        config = ProvisionConfig(
            root=tmp_path,
            source="azure",
            retry_delay=0.01,
            sources=SourceSettings(azure_imds_url=imds.url),
        )
        initdata = provision_files(config)
    assert initdata.algorithm == "sha512"
    assert (tmp_path / "run/peerpod/apf.json").read_text() == APF_JSON
    assert not (tmp_path / "etc").exists()


def test_auto_without_any_source_only_applies_initdata(tmp_path: Path) -> None:
    config = ProvisionConfig(
        root=tmp_path / "root",
        sources=SourceSettings(cidata_dir=tmp_path / "no-cidata"),
        dmi_dir=tmp_path / "no-dmi",
    )
    provision_files(config)
    assert (tmp_path / "root/run/peerpod/initdata.digest").exists()


def test_auto_picks_cloud_from_dmi(tmp_path: Path) -> None:
    dmi = tmp_path / "dmi"
    dmi.mkdir()
    (dmi / "sys_vendor").write_text("Amazon EC2\n")
    with serve_imds(
        FakeImds(user_data=render_cloud_config([WriteFile("/run/peerpod/auth.json", "{}\n")]).encode())
    ) as imds:
        config = ProvisionConfig(
            root=tmp_path / "root",
            sources=SourceSettings(cidata_dir=tmp_path / "no-cidata", aws_imds_url=imds.url),
            dmi_dir=dmi,
        )
        provision_files(config)
    assert (tmp_path / "root/run/peerpod/auth.json").read_text() == "{}\n"


def test_cli_reports_timeout_and_exits_nonzero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with serve_imds(FakeImds(script=[500] * 1000)) as imds:
        argv = ["provision-files", "--source", "gcp", "--gcp-metadata-url", imds.url, "--root", str(tmp_path)]
        rc = main([*argv, "-t", "0.2", "--retry-delay", "0.05"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "process-user-data: error: no usable user data from gcp within 0.2s" in err
    assert not (tmp_path / "run").exists()


def test_cli_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["provision-files", "--source", "alibaba"])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        main(["provision-files", "-t", "-1"])
    assert "must be greater than 0" in capsys.readouterr().err
    assert main(["provision-files", "--source", "aws", "--aws-imds-url", "nonsense"]) == 1
    assert "--aws-imds-url must be an http(s) URL" in capsys.readouterr().err


def test_cli_subprocess_end_to_end_nocloud(tmp_path: Path) -> None:
    cidata = tmp_path / "cidata"
    cidata.mkdir()
    user_data = render_cloud_config(
        [
            WriteFile("/run/peerpod/apf.json", APF_JSON),
            WriteFile("/run/peerpod/initdata", encode_initdata(INITDATA_TOML)),
            WriteFile("/run/peerpod/scratch-space.marker", ""),
            WriteFile("/run/peerpod/../../etc/x", "pwned"),
        ]
    )
    (cidata / "user-data").write_text(user_data)
    root = tmp_path / "root"
    script = Path(sys.executable).with_name("process-user-data")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "podvm.userdata.cli"]
    result = subprocess.run(
        [
            *cmd,
            "provision-files",
            "--source",
            "nocloud",
            "--cidata-dir",
            str(cidata),
            "--root",
            str(root),
            "-t",
            "30",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    peerpod = root / "run/peerpod"
    assert (peerpod / "apf.json").read_text() == APF_JSON
    assert (peerpod / "scratch-space.marker").read_bytes() == b""
    assert (peerpod / "initdata.digest").read_text() == hashlib.sha512(INITDATA_TOML.encode()).hexdigest()
    assert not (root / "etc").exists()
    assert "refusing to write '/run/peerpod/../../etc/x'" in result.stderr
    assert "TOPSECRET" not in result.stderr + result.stdout
    assert result.stdout == ""


def test_cli_help_describes_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["provision-files", "--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # line wrapping follows the terminal width
    for option in (
        "-t SECONDS, --user-data-fetch-timeout",
        "--source {nocloud,aws,azure,gcp,auto}",
        "--root",
    ):
        assert option in out
    assert "give up fetching user data after this long (default: 180)" in out
