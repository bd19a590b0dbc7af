"""Test support: cosign-style keyed signatures made here (ECDSA P-256 over the simple-signing payload)
and pushed as the `sha256-<digest>.sig` image next to the signed one, as `cosign sign` stores them."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from podvm.cdh.policy import COSIGN_PAYLOAD_TYPE, COSIGN_SIGNATURE_ANNOTATION
from tests.images.registry import skopeo


def public_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def manifest_digest(reference: str) -> str:
    raw = skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{reference}")
    assert raw.returncode == 0, raw.stderr
    return f"sha256:{hashlib.sha256(raw.stdout.encode()).hexdigest()}"


def sign(registry: str, repository: str, digest: str, key: ec.EllipticCurvePrivateKey, layout: Path) -> None:
    """Sign `registry/repository@digest` and push the signature image."""
    payload = json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": f"{registry}/{repository}"},
                "image": {"docker-manifest-digest": digest},
                "type": "cosign container image signature",
            },
            "optional": None,
        }
    ).encode()
    signature = base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()
    layout.mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob(data: bytes) -> str:
        hexdigest = hashlib.sha256(data).hexdigest()
        (blobs / hexdigest).write_bytes(data)
        return f"sha256:{hexdigest}"

    config = b'{"architecture":"","config":{},"os":"","rootfs":{"type":"layers","diff_ids":[]}}'
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": blob(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": COSIGN_PAYLOAD_TYPE,
                    "digest": blob(payload),
                    "size": len(payload),
                    "annotations": {COSIGN_SIGNATURE_ANNOTATION: signature},
                }
            ],
        }
    ).encode()
    entry = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": blob(manifest),
        "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": "sig"},
    }
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    tag = digest.replace(":", "-") + ".sig"
    result = skopeo(
        "copy", "--dest-tls-verify=false", f"oci:{layout}:sig", f"docker://{registry}/{repository}:{tag}"
    )
    assert result.returncode == 0, result.stderr
