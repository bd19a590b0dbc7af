"""The user data the adaptor builds, read back by the pod VM's own code: files, initdata and limits."""

from __future__ import annotations

import base64
import hashlib
import random
from pathlib import Path

import pytest

from adaptor.config import SETTINGS, AdaptorConfig
from adaptor.tunnel.authority import TunnelAuthority
from adaptor.userdata import POD_NAMESPACE, build_user_data, initdata_for
from podvm.userdata.provision import ProvisionConfig, provision_files
from podvm.userdata.sources import SourceSettings
from protocols.apf import ForwarderConfig
from protocols.cloudconfig import (
    ALLOWED_WRITE_FILES,
    APF_CONFIG_PATH,
    AUTH_FILE_PATH,
    INITDATA_PATH,
    MAX_USER_DATA_BYTES,
    SCRATCH_SPACE_MARKER_PATH,
    CloudConfigError,
    parse_cloud_config,
)
from protocols.initdata import (
    MAX_INITDATA_FILE_BYTES,
    MAX_TOML_BYTES,
    InitDataError,
    decode_initdata,
    encode_initdata,
)
from providers.settings import resolve

TOML = 'algorithm = "sha384"\nversion = "0.1.0"\n\n[data]\n"aa.toml" = """\n[token_configs.kbs]\n"""\n'
DEFAULT_TOML = 'algorithm = "sha256"\nversion = "0.1.0"\n'


def config_for(tmp_path: Path, **values: str | bool) -> AdaptorConfig:
    settings = resolve(SETTINGS, None, {})
    settings.update(state_dir=str(tmp_path / "state"), **values)
    return AdaptorConfig.from_values(settings)


@pytest.fixture
def authority(tmp_path: Path) -> TunnelAuthority:
    return TunnelAuthority.load_or_create(tmp_path / "tls")


def incompressible_toml(size: int) -> str:
    """Valid initdata TOML of exactly `size` bytes that gzip cannot shrink."""
    head, tail = 'algorithm = "sha256"\n[data]\n"policy.rego" = """', '"""\n'
    rng = random.Random(size)
    body = base64.b64encode(rng.randbytes(size)).decode()[: size - len(head) - len(tail)]
    return head + body + tail


def test_files_and_forwarder_config(tmp_path: Path, authority: TunnelAuthority) -> None:
    auth = tmp_path / "auth.json"
    auth.write_text('{"auths": {}}\n')
    config = config_for(tmp_path, auth_json_file=str(auth), enable_scratch_space=True)
    server = authority.issue_server("podvm-web-01234567")
    user_data = build_user_data(config, authority, server, "web", initdata_for(config, TOML))
    files = {f.path: f.content for f in parse_cloud_config(user_data)}
    assert list(files) == [APF_CONFIG_PATH, AUTH_FILE_PATH, INITDATA_PATH, SCRATCH_SPACE_MARKER_PATH]
    assert set(files) <= ALLOWED_WRITE_FILES
    apf = ForwarderConfig.from_json(files[APF_CONFIG_PATH])
    assert (apf.tls_server_cert, apf.tls_server_key) == (server.cert_pem, server.key_pem)
    assert apf.tls_client_ca == authority.client.cert_pem
    assert (apf.pod_name, apf.pod_namespace, apf.tls_min_version) == ("web", POD_NAMESPACE, "VersionTLS12")
    assert files[AUTH_FILE_PATH] == '{"auths": {}}\n'
    assert files[SCRATCH_SPACE_MARKER_PATH] == ""
    initdata = decode_initdata(files[INITDATA_PATH])
    assert initdata.digest == hashlib.sha384(TOML.encode()).hexdigest()


def test_minimal_user_data_has_only_the_forwarder_config(tmp_path: Path, authority: TunnelAuthority) -> None:
    config = config_for(tmp_path)
    user_data = build_user_data(config, authority, authority.issue_server("podvm-p-1"), "p", "")
    assert [f.path for f in parse_cloud_config(user_data)] == [APF_CONFIG_PATH]


def test_pod_initdata_wins_over_the_default(tmp_path: Path) -> None:
    config = config_for(tmp_path, initdata=encode_initdata(DEFAULT_TOML))
    assert decode_initdata(initdata_for(config, TOML)).toml == TOML.encode()
    assert initdata_for(config, "") == config.initdata
    assert initdata_for(config_for(tmp_path), "") == ""


def test_initdata_at_the_pod_vm_limit_is_accepted_by_the_pod_vm(
    tmp_path: Path, authority: TunnelAuthority
) -> None:
    """What the adaptor lets through, the pod VM's process-user-data takes: one limit, both sides."""
    toml = incompressible_toml(MAX_TOML_BYTES)
    config = config_for(tmp_path)
    user_data = build_user_data(
        config, authority, authority.issue_server("podvm-p-1"), "p", initdata_for(config, toml)
    )
    cidata = tmp_path / "cidata"
    cidata.mkdir()
    (cidata / "user-data").write_bytes(user_data)
    provision = ProvisionConfig(root=tmp_path / "root", source="nocloud", sources=SourceSettings(cidata))
    assert provision_files(provision).toml == toml.encode()


def test_initdata_over_the_pod_vm_limit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InitDataError, match=f"at most {MAX_TOML_BYTES}"):
        initdata_for(config_for(tmp_path), incompressible_toml(MAX_TOML_BYTES + 1))


@pytest.mark.parametrize(
    "toml",
    [
        'algorithm = "sha256"\nx = ' + "[" * 5000 + "]" * 5000 + "\n",
        'algorithm = "sha256"\nx = ' + "{a=" * 3000 + "1" + "}" * 3000 + "\n",
    ],
)
def test_deeply_nested_initdata_is_a_typed_error(tmp_path: Path, toml: str) -> None:
    with pytest.raises(InitDataError, match="nested too deeply"):
        initdata_for(config_for(tmp_path), toml)


def test_initdata_file_over_the_pod_vm_limit_is_refused(tmp_path: Path, authority: TunnelAuthority) -> None:
    server = authority.issue_server("podvm-p-1")
    with pytest.raises(InitDataError, match="pod VM accepts at most"):
        build_user_data(config_for(tmp_path), authority, server, "p", "A" * MAX_INITDATA_FILE_BYTES)


def test_user_data_over_the_pod_vm_limit_is_refused(tmp_path: Path, authority: TunnelAuthority) -> None:
    """The initdata file fits, but with the forwarder's config the whole document would not."""
    server = authority.issue_server("podvm-p-1")
    largest_file = "A" * (MAX_INITDATA_FILE_BYTES - 1)
    with pytest.raises(CloudConfigError, match=f"at most {MAX_USER_DATA_BYTES}"):
        build_user_data(config_for(tmp_path), authority, server, "p", largest_file)
