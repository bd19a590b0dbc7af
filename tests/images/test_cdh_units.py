"""CDH pieces without servers: upstream wire names of the protos, cdh.toml, image references, and
UnWrapKey fuzzed with packets (typed errors only, never a KEK request for a malformed kid)."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podvm.cdh.config import DEFAULT_CREDENTIALS_URI, DEFAULT_SOCKET, parse_cdh_config
from podvm.cdh.errors import ConfigError, PullError, UnwrapError
from podvm.cdh.policy import REQUIREMENT_TYPES, parse_policy
from podvm.cdh.reference import ImageReference, parse_reference
from podvm.cdh.registry import parse_auth_json
from podvm.cdh.resources import Resources
from podvm.cdh.unwrap import unwrap_optsdata
from protocols.proto import cdh_pb2, keyprovider_pb2


def test_proto_names_are_upstreams():
    keyprovider = keyprovider_pb2.DESCRIPTOR.services_by_name["KeyProviderService"]
    assert keyprovider.full_name == "keyprovider.KeyProviderService"
    assert [m.name for m in keyprovider.methods] == ["WrapKey", "UnWrapKey"]
    assert [f.name for f in keyprovider_pb2.KeyProviderKeyWrapProtocolInput.DESCRIPTOR.fields] == [
        "KeyProviderKeyWrapProtocolInput"
    ]
    assert cdh_pb2.DESCRIPTOR.services_by_name["GetResourceService"].full_name == "api.GetResourceService"
    assert cdh_pb2.DESCRIPTOR.services_by_name["ImagePullService"].full_name == "api.ImagePullService"
    assert {f.name: f.number for f in cdh_pb2.ImagePullRequest.DESCRIPTOR.fields} == {
        "image_url": 1,
        "bundle_path": 2,
    }
    assert [f.name for f in cdh_pb2.GetResourceRequest.DESCRIPTOR.fields] == ["ResourcePath"]


def test_cdh_toml_as_upstream_writes_it():
    config = parse_cdh_config(
        """
socket = "unix:///run/confidential-containers/cdh.sock"
credentials = []
[kbc]
name = "cc_kbc"
url = "http://1.2.3.4:8080"
kbs_cert = ""
[image]
image_security_policy_uri = "kbs:///default/security-policy/test"
sigstore_config_uri = "kbs:///default/sigstore-config/test"
max_concurrent_layer_downloads_per_image = 3
"""
    )
    assert config.socket == DEFAULT_SOCKET
    assert (config.kbs_url, config.kbs_cert) == ("http://1.2.3.4:8080", None)
    assert config.image.policy_uri == "kbs:///default/security-policy/test"
    assert config.image.credentials_uri == DEFAULT_CREDENTIALS_URI
    assert parse_cdh_config("").kbs_url is None
    for bad in ("[kbc]\nurl = 3", "kbc = 1", "not toml ["):
        with pytest.raises(ConfigError):
            parse_cdh_config(bad)


def test_image_references():
    assert parse_reference("busybox") == ImageReference("docker.io", "library/busybox", "latest")
    assert parse_reference("docker://127.0.0.1:5000/a/b:v1") == ImageReference("127.0.0.1:5000", "a/b", "v1")
    digest = "sha256:" + "a" * 64
    assert parse_reference(f"quay.io/x/y@{digest}") == ImageReference("quay.io", "x/y", None, digest)
    for bad in ("UPPER/case", "quay.io/x/y@sha256:short", "quay.io/x/y:bad tag", "a" * 2000):
        with pytest.raises(PullError, match="Failed to pull image manifest"):
            parse_reference(bad)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=200),
        st.fixed_dictionaries(
            {"kid": st.text(max_size=40) | st.just("kbs:///default/key/1"), "wrapped_data": st.just("AAAA")},
            optional={
                "iv": st.just("M02S5rumY5JybMLQ") | st.text(max_size=8),
                "wrap_type": st.sampled_from(["A256GCM", "A256CTR", "A128KW"]),
                "version": st.sampled_from(["0.1.0", "0.2.0"]),
                "provider": st.sampled_from(["kbs", "aliyun"]),
            },
        ).map(lambda d: json.dumps(d).encode()),
    )
)
async def test_unwrap_raises_only_unwrap_errors(raw):
    with pytest.raises(UnwrapError):
        await unwrap_optsdata(Resources(None), raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=200),
        st.fixed_dictionaries(
            {
                "default": json_values
                | st.lists(st.fixed_dictionaries({"type": st.sampled_from(REQUIREMENT_TYPES)}))
            },
            optional={"transports": json_values | st.dictionaries(st.just("docker"), json_values)},
        ).map(lambda d: json.dumps(d).encode()),
    )
)
def test_policy_parser_raises_only_the_invalid_policy_error(raw):
    try:
        parse_policy(raw)
    except PullError as exc:
        assert str(exc) == "Image Pull error: Image policy rejected: Invalid image policy file"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps({"auths": v}).encode())))
def test_auth_json_parser_raises_only_pull_errors(raw):
    with contextlib.suppress(PullError):
        parse_auth_json(raw)
