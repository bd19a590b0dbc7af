"""User data sources against a fake metadata service on loopback, detection, and the retry loop."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from podvm.userdata.detect import (
    AZURE_CHASSIS_ASSET_TAG,
    DmiInfo,
    cloud_from_dmi,
    detect_source_name,
)
from podvm.userdata.errors import FetchError, SourceConfigError, UserDataTimeout
from podvm.userdata.retrieve import retrieve_cloud_config
from podvm.userdata.sources import (
    AwsImdsSource,
    AzureImdsSource,
    GcpMetadataSource,
    NoCloudSource,
    SourceSettings,
    build_source,
)
from protocols.cloudconfig import MAX_USER_DATA_BYTES, WriteFile, render_cloud_config
from tests.fakes.imds import FakeImds, serve_imds

FILES = [WriteFile("/run/peerpod/apf.json", '{"pod-name": "p"}\n'), WriteFile("/run/peerpod/initdata", "")]
USER_DATA = render_cloud_config(FILES).encode()


@pytest.fixture
def imds() -> Iterator[FakeImds]:
    with serve_imds(FakeImds(user_data=USER_DATA)) as state:
        yield state


def test_aws_imdsv2_token_is_fetched_and_sent(imds: FakeImds) -> None:
    assert AwsImdsSource(imds.url).fetch(timeout=5) == USER_DATA
    put, get = imds.requests
    assert (put.method, put.path) == ("PUT", "/latest/api/token")
    assert put.headers["x-aws-ec2-metadata-token-ttl-seconds"] == "60"
    assert (get.method, get.path) == ("GET", "/latest/user-data")
    assert get.headers["x-aws-ec2-metadata-token"] == imds.issued_tokens[0]


def test_aws_falls_back_to_imdsv1_when_token_refused(
    imds: FakeImds, caplog: pytest.LogCaptureFixture
) -> None:
    imds.token_endpoint_enabled = False
    imds.imdsv2_required = False
    with caplog.at_level(logging.WARNING):
        assert AwsImdsSource(imds.url).fetch(timeout=5) == USER_DATA
    assert "x-aws-ec2-metadata-token" not in imds.user_data_requests()[0].headers
    assert "falling back to IMDSv1" in caplog.text


def test_aws_without_token_is_refused_when_imdsv2_required(imds: FakeImds) -> None:
    imds.token_endpoint_enabled = False
    with pytest.raises(FetchError, match="HTTP 401"):
        AwsImdsSource(imds.url).fetch(timeout=5)


def test_azure_sends_metadata_header_and_decodes_base64(imds: FakeImds) -> None:
    assert AzureImdsSource(imds.url).fetch(timeout=5) == USER_DATA
    (req,) = imds.requests
    assert req.path == "/metadata/instance/compute/userData?api-version=2021-01-01&format=text"
    assert req.headers["metadata"] == "true"


def test_gcp_sends_flavor_header_and_decodes_base64(imds: FakeImds) -> None:
    assert GcpMetadataSource(imds.url + "/").fetch(timeout=5) == USER_DATA
    (req,) = imds.requests
    assert req.path == "/computeMetadata/v1/instance/attributes/user-data"
    assert req.headers["metadata-flavor"] == "Google"


def test_nocloud_reads_user_data_file(tmp_path: Path) -> None:
    (tmp_path / "user-data").write_bytes(USER_DATA)
    assert NoCloudSource(tmp_path).fetch(timeout=1) == USER_DATA
    with pytest.raises(FetchError, match="cannot read"):
        NoCloudSource(tmp_path / "absent").fetch(timeout=1)


def test_oversized_user_data_is_refused(imds: FakeImds, tmp_path: Path) -> None:
    imds.user_data = b"#" * (MAX_USER_DATA_BYTES + 1)
    with pytest.raises(FetchError, match="more than"):
        AwsImdsSource(imds.url).fetch(timeout=5)
    (tmp_path / "user-data").write_bytes(imds.user_data)
    with pytest.raises(FetchError, match="larger than"):
        NoCloudSource(tmp_path).fetch(timeout=1)


@pytest.mark.parametrize("source_cls", [AzureImdsSource, GcpMetadataSource])
def test_base64_sources_take_as_much_user_data_as_the_others(
    imds: FakeImds, source_cls: type[AzureImdsSource]
) -> None:
    """The limit is on the user data, not on its base64 form (a third larger)."""
    imds.user_data = b"#" * MAX_USER_DATA_BYTES
    assert source_cls(imds.url).fetch(timeout=5) == imds.user_data
    imds.user_data += b"#"
    with pytest.raises(FetchError, match="more than"):
        source_cls(imds.url).fetch(timeout=5)


@pytest.mark.parametrize("source_cls", [AzureImdsSource, GcpMetadataSource])
def test_not_base64_is_fetch_error(imds: FakeImds, source_cls: type[AzureImdsSource]) -> None:
    imds.base64_encoded = False
    with pytest.raises(FetchError, match="not base64"):
        source_cls(imds.url).fetch(timeout=5)


def test_unreachable_endpoint_is_fetch_error() -> None:
    with serve_imds() as state:
        url = state.url
    with pytest.raises(FetchError, match="failed"):
        GcpMetadataSource(url).fetch(timeout=2)


@pytest.mark.parametrize("url", ["169.254.169.254", "ftp://x", "file:///etc/passwd", "http://"])
def test_bad_base_url_is_config_error(url: str) -> None:
    with pytest.raises(SourceConfigError, match="--aws-imds-url"):
        AwsImdsSource(url)


def test_build_source_names() -> None:
    settings = SourceSettings()
    assert [build_source(n, settings).name for n in ("nocloud", "aws", "azure", "gcp")] == [
        "nocloud",
        "aws",
        "azure",
        "gcp",
    ]
    with pytest.raises(SourceConfigError, match="unknown user data source"):
        build_source("alibaba", settings)


@pytest.mark.parametrize("source_cls", [AwsImdsSource, AzureImdsSource, GcpMetadataSource])
def test_retry_after_initial_errors(imds: FakeImds, source_cls: type[AwsImdsSource]) -> None:
    imds.script = [404, 500, 503]
    assert retrieve_cloud_config(source_cls(imds.url), fetch_timeout=60, retry_delay=0.01) == FILES
    assert len(imds.user_data_requests()) == 4


def test_invalid_user_data_is_retried_until_valid(imds: FakeImds) -> None:
    imds.script = [b"write_files: [\n", 500, b"runcmd: [reboot]\n"]
    assert retrieve_cloud_config(AzureImdsSource(imds.url), fetch_timeout=60, retry_delay=0.01) == FILES
    assert len(imds.user_data_requests()) == 4


def test_timeout_gives_clear_error(imds: FakeImds) -> None:
    imds.script = [500] * 10_000
    with pytest.raises(UserDataTimeout, match=r"no usable user data from gcp within 0.3s .*HTTP 500"):
        retrieve_cloud_config(GcpMetadataSource(imds.url), fetch_timeout=0.3, retry_delay=0.05)
    assert len(imds.user_data_requests()) >= 2


def test_dmi_hints() -> None:
    assert cloud_from_dmi(DmiInfo(chassis_asset_tag=AZURE_CHASSIS_ASSET_TAG)) == "azure"
    assert cloud_from_dmi(DmiInfo(sys_vendor="Microsoft Corporation")) == "azure"
    assert cloud_from_dmi(DmiInfo(sys_vendor="Amazon EC2")) == "aws"
    assert cloud_from_dmi(DmiInfo(sys_vendor="Google", product_name="Google Compute Engine")) == "gcp"
    assert cloud_from_dmi(DmiInfo(sys_vendor="QEMU", product_name="Standard PC (Q35 + ICH9, 2009)")) is None


def _dmi_dir(tmp_path: Path, **attrs: str) -> Path:
    d = tmp_path / "dmi"
    d.mkdir()
    for name, value in attrs.items():
        (d / name).write_text(value + "\n")
    return d


def test_detection_prefers_config_drive_file(tmp_path: Path) -> None:
    dmi = _dmi_dir(tmp_path, sys_vendor="Amazon EC2")
    settings = SourceSettings(cidata_dir=tmp_path)
    assert detect_source_name(settings, dmi) == "aws"
    (tmp_path / "user-data").write_bytes(USER_DATA)
    assert detect_source_name(settings, dmi) == "nocloud"


def test_detection_reads_sysfs_attributes(tmp_path: Path) -> None:
    settings = SourceSettings(cidata_dir=tmp_path / "no-cidata")
    dmi = _dmi_dir(tmp_path, sys_vendor="Google", product_name="Google Compute Engine")
    assert detect_source_name(settings, dmi) == "gcp"
    assert detect_source_name(settings, tmp_path / "missing") is None
