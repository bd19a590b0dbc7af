"""The layer format against Debian's real skopeo (Go ocicrypt 1.0.3, JWE recipients since it predates
key providers): layers skopeo encrypts decrypt with our verify-then-decrypt code, and layers our code
encrypts are decrypted by skopeo, byte for byte. The JWE wrapping of the options is done by jwcrypto
here; only the layer cipher and its option documents are ours."""

from __future__ import annotations

import base64
import hashlib
import io
import json

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwcrypto import jwe, jwk

from protocols.ocicrypt import keyprovider, layer
from tests.images.registry import make_oci_image, read_oci_image, skopeo, write_oci_image

JWE_ANNOTATION = "org.opencontainers.image.enc.keys.jwe"
LAYERS = [{"bin/app": b"#!/bin/sh\necho jwe\n"}, {"data/x": bytes(range(256)) * 2000}]


def _keys(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = tmp_path / "priv.pem", tmp_path / "pub.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key, private, public


def test_layers_encrypted_by_skopeo_decrypt_with_ours(tmp_path):
    key, _, public = _keys(tmp_path)
    image = make_oci_image(tmp_path / "plain", LAYERS)
    result = skopeo("copy", "--encryption-key", f"jwe:{public}", image.ref, f"oci:{tmp_path / 'enc'}:latest")
    assert result.returncode == 0, result.stderr
    manifest, blobs = read_oci_image(tmp_path / "enc")
    for descriptor, ciphertext, plain in zip(manifest["layers"], blobs, image.layers, strict=True):
        assert descriptor["mediaType"].endswith("+encrypted")
        annotations = descriptor["annotations"]
        token = jwe.JWE()
        token.deserialize(base64.b64decode(annotations[JWE_ANNOTATION]).decode(), key=jwk.JWK.from_pyca(key))
        private = layer.parse_private(token.payload)
        public_options = layer.parse_public(base64.b64decode(annotations[keyprovider.PUBOPTS_ANNOTATION]))
        assert private.digest == f"sha256:{hashlib.sha256(plain).hexdigest()}"
        out = io.BytesIO()
        layer.decrypt_file(io.BytesIO(ciphertext), out, private, public_options)
        assert out.getvalue() == plain


def test_layers_encrypted_by_ours_decrypt_with_skopeo(tmp_path):
    key, private_pem, _ = _keys(tmp_path)
    image = make_oci_image(tmp_path / "plain", LAYERS)
    manifest, blobs = read_oci_image(tmp_path / "plain")
    recipient = jwk.JWK.from_pyca(key.public_key())
    layers = []
    for descriptor, blob in zip(manifest["layers"], blobs, strict=True):
        out = io.BytesIO()
        private, public = layer.encrypt_file(io.BytesIO(blob), out)
        token = jwe.JWE(private.to_json(), json.dumps({"alg": "ECDH-ES+A256KW", "enc": "A256GCM"}))
        token.add_recipient(recipient)
        ciphertext = out.getvalue()
        annotations = {
            JWE_ANNOTATION: base64.b64encode(token.serialize().encode()).decode(),
            keyprovider.PUBOPTS_ANNOTATION: base64.b64encode(public.to_json()).decode(),
        }
        layers.append(
            (
                {
                    "mediaType": descriptor["mediaType"] + keyprovider.ENCRYPTED_SUFFIX,
                    "digest": f"sha256:{hashlib.sha256(ciphertext).hexdigest()}",
                    "size": len(ciphertext),
                    "annotations": annotations,
                },
                ciphertext,
            )
        )
    write_oci_image(tmp_path / "ours", tmp_path / "plain", manifest, layers, "latest")
    result = skopeo(
        "copy",
        "--decryption-key",
        str(private_pem),
        f"oci:{tmp_path / 'ours'}:latest",
        f"oci:{tmp_path / 'back'}:latest",
    )
    assert result.returncode == 0, result.stderr
    _, back = read_oci_image(tmp_path / "back")
    assert back == image.layers
