"""Unit tests of the KBS parts: JWE, token checks, sessions, metrics, configuration."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID
from jwcrypto import jwe as jwcrypto_jwe
from jwcrypto import jwk as jwcrypto_jwk

from kbs.config import KbsConfigError, parse_config
from kbs.jwe import JweError, encrypt
from kbs.metrics import KbsMetrics
from kbs.sessions import SWEEP_KEY, SessionStore, Sweeper
from kbs.storage import KBS, SESSIONS
from kbs.storage.localfs import LocalFsStorage
from kbs.storage.memory import MemoryStorage
from kbs.token import TokenError, TokenSettings, TokenVerifier, check_binding, json_pointer
from protocols import kbs
from verifier.ear import EarSigner

# ---- JWE


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()])
def test_ec_curves_decrypt_with_jwcrypto(curve: ec.EllipticCurve) -> None:
    key = ec.generate_private_key(curve)
    jwe = encrypt(b"payload", kbs.tee_pubkey_of(key.public_key()))
    assert (len(jwe.iv), len(jwe.tag), len(jwe.encrypted_key)) == (12, 16, 40)
    header_text = base64.urlsafe_b64decode(jwe.protected + "==").decode()
    assert list(json.loads(header_text)) == ["alg", "enc", "epk"]
    token = jwcrypto_jwe.JWE()
    token.deserialize(jwe.to_json().decode(), key=jwcrypto_jwk.JWK.from_pyca(key))
    assert token.payload == b"payload"


def test_unsupported_keys_are_refused() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    with pytest.raises(JweError, match="RSA1_5"):
        encrypt(b"x", kbs.tee_pubkey_of(rsa_key, alg="RSA1_5"))
    ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(JweError, match="only ECDH-ES\\+A256KW"):
        encrypt(b"x", kbs.tee_pubkey_of(ec_key, alg="ECDH-ES"))
    with pytest.raises(JweError, match="curve"):
        encrypt(b"x", kbs.EcPublicJwk("secp256k1", "ECDH-ES+A256KW", "AA", "AA"))


# ---- tokens


def ear_claims(
    tee_pubkey: kbs.TeePubKey, report_data: str, tee: str = "snp", now: int | None = None
) -> dict[str, Any]:
    now = int(datetime.now(UTC).timestamp()) if now is None else now
    runtime = kbs.runtime_data_claims("nonce", tee_pubkey, "")
    return {
        "iat": now,
        "exp": now + 300,
        "submods": {
            "cpu0": {
                "ear.status": "affirming",
                "ear.veraison.annotated-evidence": {
                    tee: {},
                    "report_data": report_data,
                    "runtime_data_claims": runtime,
                },
            }
        },
    }


def bound_report_data(tee_pubkey: kbs.TeePubKey) -> str:
    """As the SNP verifier shows it: the digest padded to 64 bytes, hex."""
    digest = kbs.runtime_data_digest(kbs.runtime_data_claims("nonce", tee_pubkey, ""))
    return kbs.report_data(digest).hex()


def tee_key() -> kbs.TeePubKey:
    return kbs.tee_pubkey_of(ec.generate_private_key(ec.SECP256R1()).public_key())


def ca_and_leaf(tmp_path: Path) -> tuple[Path, EarSigner, Path]:
    """A CA (written as trusted PEM), a token signer whose x5c chains to it, and an unrelated CA."""
    now = datetime.now(UTC)

    def cert(subject: str, issuer: str, public: Any, signer: Any, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        return builder.sign(signer, hashes.SHA256())

    ca_key, other_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = cert("Token CA", "Token CA", ca_key.public_key(), ca_key, True)
    other = cert("Other CA", "Other CA", other_key.public_key(), other_key, True)
    leaf = cert("AS signer", "Token CA", leaf_key.public_key(), ca_key, False)
    trusted, untrusted = tmp_path / "ca.pem", tmp_path / "other.pem"
    trusted.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    untrusted.write_bytes(other.public_bytes(serialization.Encoding.PEM))
    return trusted, EarSigner(leaf_key, [leaf, ca]), untrusted


def test_x5c_chain_to_a_trusted_certificate(tmp_path: Path) -> None:
    trusted, signer, untrusted = ca_and_leaf(tmp_path)
    key = tee_key()
    token = signer.sign(ear_claims(key, bound_report_data(key)))
    good = TokenVerifier(TokenSettings(trusted_certs_paths=(str(trusted),)))
    assert good.verify(token).tee_pubkey == key
    other = TokenVerifier(TokenSettings(trusted_certs_paths=(f"file://{untrusted}",)))
    with pytest.raises(TokenError, match="does not lead to a trusted certificate"):
        other.verify(token)
    with pytest.raises(TokenError, match="not a trusted key"):
        TokenVerifier().verify(token)  # nothing configured: refused
    assert TokenVerifier(TokenSettings(insecure_header_jwk=True)).verify(token).tee_pubkey == key
    # A chain whose leaf is not the header key is refused even if it chains.
    stranger = EarSigner(ec.generate_private_key(ec.SECP256R1()))
    forged_header = dict(stranger.jwk, x5c=signer.jwk["x5c"])
    head = kbs.b64url_encode(json.dumps({"alg": "ES256", "jwk": forged_header}).encode())
    forged = head + "." + stranger.sign(ear_claims(key, bound_report_data(key))).split(".", 1)[1]
    with pytest.raises(TokenError, match="leaf certificate does not hold the header jwk"):
        good.verify(forged)


def es256(key: ec.EllipticCurvePrivateKey, header: dict[str, Any], claims: dict[str, Any]) -> str:
    signing_input = (
        kbs.b64url_encode(json.dumps(header).encode()) + "." + kbs.b64url_encode(json.dumps(claims).encode())
    )
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return signing_input + "." + kbs.b64url_encode(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def test_kid_from_trusted_jwk_set(tmp_path: Path) -> None:
    signing = ec.generate_private_key(ec.SECP256R1())
    point = kbs.tee_pubkey_of(signing.public_key()).to_json()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(
        json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "x": point["x"], "y": point["y"], "kid": "as-1"}]})
    )
    key = tee_key()
    claims = ear_claims(key, bound_report_data(key))
    verifier = TokenVerifier(TokenSettings(trusted_jwk_sets=(str(jwks),)))
    assert verifier.verify(es256(signing, {"alg": "ES256", "kid": "as-1"}, claims)).tee_pubkey == key
    with pytest.raises(TokenError, match="kid 'as-2' is not in the trusted JWK sets"):
        verifier.verify(es256(signing, {"alg": "ES256", "kid": "as-2"}, claims))
    impostor = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(TokenError, match="signature does not verify"):
        verifier.verify(es256(impostor, {"alg": "ES256", "kid": "as-1"}, claims))
    with pytest.raises(TokenError, match="alg 'HS256'"):
        verifier.verify(es256(signing, {"alg": "HS256", "kid": "as-1"}, claims))


def test_binding_check_forms() -> None:
    key = tee_key()
    digest = kbs.runtime_data_digest(kbs.runtime_data_claims("nonce", key, ""))
    runtime = kbs.runtime_data_claims("nonce", key, "")
    check_binding({"snp": {}, "report_data": kbs.report_data(digest).hex(), "runtime_data_claims": runtime})
    check_binding(
        {"sample": {}, "report_data": base64.b64encode(digest).decode(), "runtime_data_claims": runtime}
    )
    non_verbose = {k: v for k, v in runtime.items() if k != "additional-evidence"}
    check_binding(
        {"tdx": {}, "report_data": kbs.report_data(digest).hex(), "runtime_data_claims": non_verbose}
    )
    with pytest.raises(TokenError, match="report_data mismatch"):
        check_binding({"snp": {}, "report_data": "00" * 64, "runtime_data_claims": runtime})
    with pytest.raises(TokenError, match="binding is unproven"):
        check_binding({"snp": {}, "runtime_data_claims": runtime})
    se_digest = kbs.runtime_data_digest(runtime, "sha512")
    check_binding({"se": {}, "report_data": se_digest.hex(), "runtime_data_claims": runtime})


def test_tee_key_paths() -> None:
    key = tee_key()
    signer = EarSigner.ephemeral()
    now = int(datetime.now(UTC).timestamp())
    legacy = signer.sign(
        {"exp": now + 60, "customized_claims": {"runtime_data": {"tee-pubkey": key.to_json()}}}
    )
    verifier = TokenVerifier(own_keys=[signer_key(signer)])
    assert verifier.verify(legacy).tee_pubkey == key
    custom = signer.sign({"exp": now + 60, "mine": {"k": key.to_json()}})
    with pytest.raises(TokenError, match="Tee public key not found"):
        verifier.verify(custom)
    extra = TokenVerifier(TokenSettings(extra_teekey_paths=("/mine/k",)), own_keys=[signer_key(signer)])
    assert extra.verify(custom).tee_pubkey == key
    assert json_pointer({"a/b": {"c~d": [1, 2]}}, "/a~1b/c~0d/1") == 2
    assert json_pointer({"a": [1]}, "/a/5") is None


def test_a_stored_token_read_again_is_still_checked_for_expiry() -> None:
    key = tee_key()
    now = [1_800_000_000.0]
    token = EarSigner.ephemeral().sign(ear_claims(key, bound_report_data(key), now=int(now[0])))
    verifier = TokenVerifier(clock=lambda: now[0])
    assert verifier.stored(token).tee_pubkey == key
    assert verifier.stored(token).tee_pubkey == key  # the session's next resource request
    now[0] += 301
    with pytest.raises(TokenError, match="expired"):
        verifier.stored(token)


def signer_key(signer: EarSigner) -> Any:
    from kbs.jwt import public_key_from_jwk

    return public_key_from_jwk(signer.jwk)


# ---- sessions


async def test_sessions(tmp_path: Path) -> None:
    now = [1000.0]
    store = SessionStore(LocalFsStorage(tmp_path, SESSIONS), timeout=300, clock=lambda: now[0])
    session = await store.create("snp", "nonce")
    assert len(session.id) == 32 and await store.get(session.id) == session
    assert await store.attest(session, "token-1")
    assert not await store.attest(session, "token-2")  # a nonce is consumed once
    attested = await store.get(session.id)
    assert attested is not None and attested.token == "token-1"
    assert not await store.attest(attested, "token-3")
    other = SessionStore(LocalFsStorage(tmp_path, SESSIONS), timeout=300, clock=lambda: now[0])  # a replica
    assert (await other.get(session.id)) == attested
    assert await store.get("not-an-id") is None and await store.get("0" * 32) is None
    late = await store.create("snp", "n")
    now[0] += 300
    assert await store.get(session.id) is None
    assert not await store.attest(late, "late")  # expired before its evidence was verified
    now[0] += 1000
    fresh = await store.create("snp", "n2")
    assert await store.sweep() == 1  # `late`; `session` was deleted when read expired
    assert await store.storage.list() == [fresh.id]


async def test_one_replica_sweeps_per_interval() -> None:
    now = [1000.0]
    lease = MemoryStorage(KBS)
    sessions = SessionStore(MemoryStorage(SESSIONS), timeout=300, clock=lambda: now[0])
    sweepers = [Sweeper(sessions, lease, clock=lambda: now[0]) for _ in range(3)]
    assert [await sweeper.claim() for sweeper in sweepers] == [True, False, False]
    now[0] += 59
    assert [await sweeper.claim() for sweeper in sweepers] == [False, False, False]
    now[0] += 1
    assert [await sweeper.claim() for sweeper in reversed(sweepers)] == [True, False, False]
    await lease.set(SWEEP_KEY, b"garbage")  # unreadable: taken over
    assert await sweepers[0].claim()


class _SwallowsCancellation(MemoryStorage):
    """A lease whose read, like a storage client's may, turns the task's cancellation into an
    ordinary answer (nothing stored) instead of raising it."""

    def __init__(self, namespace: str) -> None:
        super().__init__(namespace)
        self.reading = asyncio.Event()

    async def get(self, key: str) -> bytes | None:
        self.reading.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        return None


async def test_a_sweeper_stops_even_when_its_storage_swallows_the_cancellation() -> None:
    """A KBS stopping mid-sweep: before, the swallowed cancellation let the sweeper sleep on, and
    the shutdown that awaited it never ended (a hung test teardown on Redis)."""
    lease = _SwallowsCancellation(KBS)
    sweeper = Sweeper(SessionStore(MemoryStorage(SESSIONS)), lease)
    task = asyncio.create_task(sweeper.run())
    await lease.reading.wait()
    async with asyncio.timeout(30):  # far above what stopping takes; the old code never returned
        await sweeper.stop(task)
    assert task.done()


# ---- metrics


def test_metrics_text_format() -> None:
    metrics = KbsMetrics()
    metrics.resource_reads.labels('repo/"odd"\\path').inc()
    metrics.duration.observe(0.0007)
    text = metrics.render().decode()
    assert 'kbs_resource_reads_total{resource_path="repo/\\"odd\\"\\\\path"} 1.0' in text
    assert 'kbs_http_request_duration_seconds_bucket{le="0.0005"} 0.0' in text
    assert 'kbs_http_request_duration_seconds_bucket{le="0.001"} 1.0' in text
    assert "# TYPE kbs_http_active_connections gauge" in text
    assert "# TYPE kbs_auth_requests_total counter" in text
    assert metrics.value("kbs_resource_reads_total", resource_path='repo/"odd"\\path') == 1


# ---- configuration


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[http_server", "not TOML"),
        ("", "HTTPS needs"),
        ("[http_server]\ninsecure_http = true\nworker_count = 2", "needs storage_type"),
        ("[http_server]\ninsecure_http = true\nidle_timeout = 0", "idle_timeout and body_timeout must be"),
        ('[http_server]\ninsecure_http = true\nbody_timeout = "1s"', "body_timeout must be a int"),
        (
            '[http_server]\ninsecure_http = true\n[attestation_service]\ntype = "coco_as_remote"',
            "not supported",
        ),
        (
            '[http_server]\ninsecure_http = true\n[attestation_service]\ntype = "coco_as_grpc"\n'
            'as_addr = "as:50004"',
            r"is not http\(s\)://host:port",
        ),
        (
            '[http_server]\ninsecure_http = true\n[attestation_service]\ntype = "coco_as_grpc"\n'
            'work_dir = "/x"',
            "work_dir is not a coco_as_grpc key",
        ),
        ('[http_server]\ninsecure_http = "yes"', "insecure_http must be a bool"),
        (
            '[http_server]\ninsecure_http = true\n[storage_backend]\nstorage_type = "Sqlite"',
            "'Sqlite' is not one of LocalFs, LocalJson, Memory, Postgres, Redis",
        ),
        ('[http_server]\ninsecure_http = true\n[storage_backend]\nstorage_type = "LocalFs"', "dir_path"),
    ],
)
def test_config_errors(text: str, message: str) -> None:
    with pytest.raises(KbsConfigError, match=message):
        parse_config(text)


def test_kbs_command_rejects_a_bad_configuration(tmp_path: Path) -> None:
    config = tmp_path / "kbs.toml"
    config.write_text("[http_server]\nsockets = 5\n")
    result = subprocess.run(
        [sys.executable, "-m", "kbs.cli", "--config-file", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "http_server.sockets must be a list" in result.stderr


def test_the_http_server_frames_requests_with_aiohttps_c_parser() -> None:
    """aiohttp's compiled (llhttp) request parser, not its pure-Python fallback, which a missing
    wheel or AIOHTTP_NO_EXTENSIONS would select silently at several times the CPU per request."""
    compiled = importlib.import_module("aiohttp._http_parser").HttpRequestParser
    assert getattr(importlib.import_module("aiohttp.web_protocol"), "HttpRequestParser") is compiled  # noqa: B009
