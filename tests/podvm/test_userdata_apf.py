"""apf.json as the pod VM reads it from user data: anything malformed is a ForwarderConfigError."""

from __future__ import annotations

import pytest

from protocols.apf import ForwarderConfig, ForwarderConfigError


def test_round_trip() -> None:
    config = ForwarderConfig("cert", "key", "ca", "VersionTLS13", ("TLS_AES_128_GCM_SHA256",), "/ns", "p")
    assert ForwarderConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"pod-network": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
        ("[]", "must hold a JSON object"),
        ('{"tls-server-cert": 1}', "'tls-server-cert' must be a string"),
        ('{"tls-cipher-suites": [1]}', "must be a list of strings"),
        ('{"pod-network": [1]}', "must be an object"),
        ("{", "is not JSON"),
    ],
)
def test_malformed_apf_json(text: str, message: str) -> None:
    with pytest.raises(ForwarderConfigError, match=message):
        ForwarderConfig.from_json(text)
