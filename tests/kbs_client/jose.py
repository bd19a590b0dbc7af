"""Resource responses made by an independent JOSE library (joserfc), shaped as the KBS sends them:
flattened JSON with everything in the protected header (a compact JWE split into its members)."""

from __future__ import annotations

import json
from typing import Any

from joserfc import jwe
from joserfc.jwk import ECKey, RSAKey


def encrypt_for(jwk: dict[str, Any], plaintext: bytes, *, enc: str = "A256GCM") -> bytes:
    key = ECKey.import_key(jwk) if jwk["kty"] == "EC" else RSAKey.import_key(jwk)
    compact = jwe.encrypt_compact(
        {"alg": jwk["alg"], "enc": enc}, plaintext, key, algorithms=[jwk["alg"], enc]
    )
    protected, encrypted_key, iv, ciphertext, tag = compact.split(".")
    return json.dumps(
        {
            "protected": protected,
            "encrypted_key": encrypted_key,
            "iv": iv,
            "ciphertext": ciphertext,
            "tag": tag,
        }
    ).encode()
