"""The guest client against the real KBS over HTTP on 127.0.0.1: the sample TEE attests under a policy
that allows it and decrypts its resource; the default policy refuses it; expired sessions are
re-attested; passport (Bearer) mode; the admin client drives policies, resources and reference values."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kbs.client.admin import AdminClient
from kbs.sessions import SessionStore
from kbs.token import json_pointer as _pointer
from podvm.attestation_agent.agent import AttesterEvidence
from podvm.attestation_agent.attester import SampleAttester
from protocols.kbs_client.errors import JweError, KbsUnauthorized, RcarHandshakeError
from protocols.kbs_client.rcar import KbsClient
from protocols.kbs_client.teekey import ALGORITHM_EC_P256, ALGORITHM_EC_P521, ALGORITHM_RSA, TeeKeyPair
from tests.kbs.support import AFFIRMING_POLICY, SAMPLE_TRUSTING_POLICY, RunningKbs, start_kbs

SECRET = b"shhhhhhh \x00\xff"
RESOURCE = "default/test/secret"
INIT_DATA = """algorithm = "sha384"
version = "0.1.0"

[data]
"aa.toml" = '''
[token_configs.kbs]
url = "http://127.0.0.1:8080"
'''
"""


async def _serve(tmp_path: Path, *, allow_sample: bool, clock: list[float] | None = None) -> RunningKbs:
    def short_clock(broker: object) -> None:
        if clock is not None:
            sessions = broker.sessions  # type: ignore[attr-defined]
            broker.sessions = SessionStore(sessions.storage, timeout=300, clock=lambda: clock[0])  # type: ignore[attr-defined]

    server = await start_kbs(tmp_path, configure=short_clock)
    async with AdminClient(server.url, admin_token=server.admin.token()) as admin:
        await admin.set_attestation_policy(SAMPLE_TRUSTING_POLICY.encode())
        if allow_sample:
            await admin.set_resource_policy(AFFIRMING_POLICY.encode())
        await admin.set_resource(RESOURCE, SECRET)
    return server


@pytest.fixture
async def kbs(tmp_path: Path) -> AsyncIterator[RunningKbs]:
    server = await _serve(tmp_path, allow_sample=True)
    yield server
    await server.runner.cleanup()


def guest(
    url: str, key: TeeKeyPair | None = None, *, init_data: str | None = None, rcar_attempts: int = 5
) -> KbsClient:
    evidence = AttesterEvidence(SampleAttester())
    return KbsClient(
        url,
        evidence_provider=evidence,
        tee_key=key,
        init_data=init_data,
        rcar_attempts=rcar_attempts,
        retry_delay=0,
    )


def json_pointer(doc: Any, pointer: str) -> Any:
    value = _pointer(doc, pointer)
    assert value is not None, pointer
    return value


def _claims(token: str) -> dict[str, object]:
    from protocols.kbs import b64url_decode

    return dict(json.loads(b64url_decode(token.split(".")[1], "claims")))


@pytest.mark.parametrize("algorithm", [ALGORITHM_EC_P256, ALGORITHM_EC_P521, ALGORITHM_RSA])
async def test_sample_guest_attests_and_decrypts(kbs: RunningKbs, algorithm: str) -> None:
    key = TeeKeyPair.generate(algorithm)
    async with guest(kbs.url, key) as client:
        assert await client.get_resource(RESOURCE) == SECRET
        assert await client.get_resource(f"kbs:///{RESOURCE}") == SECRET
        token, same_key = await client.get_token()
    assert same_key is key
    evidence = "/submods/cpu0/ear.veraison.annotated-evidence"
    runtime = json_pointer(_claims(token.content), f"{evidence}/runtime_data_claims")
    assert runtime["tee-pubkey"] == key.public_jwk()
    assert runtime["additional-evidence"] == ""
    assert json_pointer(_claims(token.content), "/submods/cpu0/ear.status") == "affirming"


async def test_default_resource_policy_refuses_the_sample_tee(tmp_path: Path) -> None:
    server = await _serve(tmp_path, allow_sample=False)
    try:
        async with guest(server.url) as client:
            with pytest.raises(KbsUnauthorized) as refused:
                await client.get_resource(RESOURCE)
            assert refused.value.status == 401 and refused.value.error_type == "PolicyDeny"
            token, _ = await client.get_token()  # attestation itself succeeded
            assert token.is_valid()
    finally:
        await server.runner.cleanup()


async def test_expired_session_is_attested_again(tmp_path: Path) -> None:
    now = [1_000_000.0]
    server = await _serve(tmp_path, allow_sample=True, clock=now)
    try:
        async with guest(server.url) as client:
            assert await client.get_resource(RESOURCE) == SECRET
            first = client.token
            now[0] += 301  # the KBS forgets the session; the client's 401 handling re-runs RCAR
            assert await client.get_resource(RESOURCE) == SECRET
            assert client.token is not None and client.token != first
    finally:
        await server.runner.cleanup()


async def test_missing_resource(kbs: RunningKbs) -> None:
    async with guest(kbs.url) as client:
        with pytest.raises(KbsUnauthorized, match=r"not found|PluginInternalError"):
            await client.get_resource("default/test/absent")


async def test_passport_mode_with_the_token_and_its_key(kbs: RunningKbs) -> None:
    async with guest(kbs.url) as client:
        token, key = await client.get_token()
    async with KbsClient(kbs.url, token=token.content, tee_key=key) as passport:
        assert await passport.get_resource(RESOURCE) == SECRET
    # A token bound to another key: the KBS encrypts for the token's key, this client cannot decrypt.
    async with KbsClient(kbs.url, token=token.content, tee_key=TeeKeyPair.generate()) as thief:
        with pytest.raises(JweError):
            await thief.get_resource(RESOURCE)
    head, body, signature = token.content.split(".")
    forged_token = f"{head}.{body}.{signature[::-1]}"
    async with KbsClient(kbs.url, token=forged_token, tee_key=key) as forged:
        with pytest.raises(KbsUnauthorized):
            await forged.get_resource(RESOURCE)


async def test_init_data_reaches_the_token(kbs: RunningKbs) -> None:
    async with guest(kbs.url, init_data=INIT_DATA) as client:
        token, _ = await client.get_token()
    claims = json_pointer(
        _claims(token.content), "/submods/cpu0/ear.veraison.annotated-evidence/init_data_claims"
    )
    assert claims["aa.toml"] == {"token_configs": {"kbs": {"url": "http://127.0.0.1:8080"}}}


async def test_attestation_refused_after_retries(tmp_path: Path) -> None:
    server = await start_kbs(tmp_path)  # shipped attestation policy: the sample TEE is contraindicated
    try:
        async with guest(server.url, rcar_attempts=2) as client:
            token, _ = await client.get_token()
            assert json_pointer(_claims(token.content), "/submods/cpu0/ear.status") == "contraindicated"
        bad_version = KbsClient(server.url, evidence_provider=_WrongTee(), retry_delay=0, rcar_attempts=2)
        async with bad_version as client:
            with pytest.raises(RcarHandshakeError, match="2 times"):
                await client.get_token()
    finally:
        await server.runner.cleanup()


class _WrongTee(AttesterEvidence):
    def __init__(self) -> None:
        super().__init__(SampleAttester())

    async def tee(self) -> str:
        return "snp"  # sample evidence presented as SNP: the SNP verifier refuses it


async def test_admin_client_reference_values_and_deletion(kbs: RunningKbs) -> None:
    async with AdminClient(kbs.url, admin_token=kbs.admin.token()) as admin:
        await admin.set_sample_reference_value("svn", ["1"])
        assert await admin.get_reference_value("svn") == ["1"]
        await admin.delete_resource(RESOURCE)
    async with guest(kbs.url) as client:
        with pytest.raises(KbsUnauthorized):
            await client.get_resource(RESOURCE)
    async with AdminClient(kbs.url) as anonymous:
        with pytest.raises(KbsUnauthorized) as refused:
            await anonymous.set_resource(RESOURCE, b"x")
        assert refused.value.error_type == "AdminAuthAccess"
