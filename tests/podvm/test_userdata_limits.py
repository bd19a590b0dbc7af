"""process-user-data on initdata it must refuse: one line on stderr and exit 1, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from podvm.userdata.cli import main
from protocols.cloudconfig import INITDATA_PATH, WriteFile, render_cloud_config
from protocols.initdata import encode_initdata


@pytest.mark.parametrize(
    "toml",
    [
        'algorithm = "sha256"\nx = ' + "[" * 5000 + "]" * 5000 + "\n",
        'algorithm = "sha256"\nx = ' + "{a=" * 3000 + "1" + "}" * 3000 + "\n",
    ],
)
def test_deeply_nested_initdata(tmp_path: Path, toml: str, capsys: pytest.CaptureFixture[str]) -> None:
    cidata, root = tmp_path / "cidata", tmp_path / "root"
    cidata.mkdir()
    user_data = render_cloud_config([WriteFile(INITDATA_PATH, encode_initdata(toml) + "\n")])
    (cidata / "user-data").write_text(user_data)
    argv = ["provision-files", "--source", "nocloud", "--cidata-dir", str(cidata), "--root", str(root)]
    assert main([*argv, "-t", "5"]) == 1
    error = capsys.readouterr().err
    assert "process-user-data: error: /run/peerpod/initdata: initdata TOML is nested too deeply" in error
    assert "Traceback" not in error
    assert not (root / "run/peerpod/initdata.digest").exists()
