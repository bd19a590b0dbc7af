"""The layer cipher `AES_256_CTR_HMAC_SHA256` (Go ocicrypt's only block cipher) and its options.

Encryption: AES-256-CTR with a random 16-byte nonce as the initial 128-bit big-endian counter block,
HMAC-SHA256 keyed with the same symmetric key over the ciphertext. The private options (key, nonce,
plaintext digest) are what the key provider wraps; the public ones (the HMAC) travel in the
`org.opencontainers.image.enc.pubopts` annotation.

Decryption here is verify-then-decrypt: the HMAC over the whole ciphertext is checked before a single
plaintext byte is produced (upstream streams plaintext and checks at EOF). Both passes run in fixed-size
chunks, so memory stays constant whatever the layer size.
"""

from __future__ import annotations

import hashlib
import hmac as hmac_compare
import io
import os
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from protocols.ocicrypt import jsonbytes
from protocols.ocicrypt.errors import LayerDecryptionError, MessageFormatError

CIPHER = "AES_256_CTR_HMAC_SHA256"
SYMKEY_SIZE = 32
NONCE_SIZE = 16
HMAC_SIZE = 32
CHUNK_SIZE = 1024 * 1024
# Go ocicrypt's message for a layer whose HMAC does not match (blockcipher_aes_ctr.go).
HMAC_MISMATCH = "could not properly decrypt byte stream"


@dataclass(frozen=True, slots=True)
class PrivateOptions:
    """The secret half: what gets wrapped as `optsdata`."""

    symkey: bytes
    nonce: bytes
    digest: str = ""

    def to_json(self) -> bytes:
        return jsonbytes.dumps(
            {
                "symkey": jsonbytes.encode(self.symkey),
                "digest": self.digest,
                "cipheroptions": {"nonce": jsonbytes.encode(self.nonce)},
            }
        )


@dataclass(frozen=True, slots=True)
class PublicOptions:
    """The public half, carried in the `pubopts` annotation."""

    hmac: bytes
    cipher: str = CIPHER

    def to_json(self) -> bytes:
        return jsonbytes.dumps(
            {"cipher": self.cipher, "hmac": jsonbytes.encode(self.hmac), "cipheroptions": {}}
        )


def parse_private(raw: bytes | str) -> PrivateOptions:
    doc = jsonbytes.load_object(raw, "layer private options (optsdata)")
    if "symkey" not in doc:
        raise MessageFormatError("layer private options have no symkey")
    symkey = jsonbytes.decode(doc["symkey"], "optsdata symkey")
    nonce = jsonbytes.decode_optional(
        jsonbytes.optional_object(doc, "cipheroptions", "optsdata cipheroptions"), "nonce", "optsdata nonce"
    )
    if len(symkey) != SYMKEY_SIZE:
        raise MessageFormatError(f"optsdata symkey must be {SYMKEY_SIZE} bytes, got {len(symkey)}")
    if nonce is None or len(nonce) != NONCE_SIZE:
        raise MessageFormatError(f"optsdata cipheroptions.nonce must be {NONCE_SIZE} bytes")
    digest = jsonbytes.optional_string(doc, "digest", "optsdata digest", "") or ""
    return PrivateOptions(symkey=symkey, nonce=nonce, digest=digest)


def parse_public(raw: bytes | str) -> PublicOptions:
    doc = jsonbytes.load_object(raw, "layer public options (pubopts)")
    cipher = jsonbytes.optional_string(doc, "cipher", "pubopts cipher", "")
    if cipher != CIPHER:
        raise MessageFormatError(f"unsupported layer cipher {str(cipher)[:40]!r}: only {CIPHER}")
    mac = jsonbytes.decode_optional(doc, "hmac", "pubopts hmac")
    if mac is None or len(mac) != HMAC_SIZE:
        raise MessageFormatError(f"pubopts hmac must be {HMAC_SIZE} bytes")
    return PublicOptions(hmac=mac)


def new_private_options() -> PrivateOptions:
    return PrivateOptions(symkey=os.urandom(SYMKEY_SIZE), nonce=os.urandom(NONCE_SIZE))


def _ctr(options: PrivateOptions) -> CipherContext:
    return Cipher(algorithms.AES(options.symkey), modes.CTR(options.nonce)).encryptor()


def _hmac(options: PrivateOptions) -> crypto_hmac.HMAC:
    return crypto_hmac.HMAC(options.symkey, hashes.SHA256())


class _DecryptingReader(io.RawIOBase):
    """Plaintext read from a ciphertext file whose HMAC was verified (made by `HmacCheck.plaintext`)."""

    def __init__(self, ciphertext: BinaryIO, options: PrivateOptions) -> None:
        self._source = ciphertext
        self._context = _ctr(options)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self._source.read(len(buffer))
        plain = self._context.update(data)
        buffer[: len(plain)] = plain
        return len(plain)


class HmacCheck:
    """The first pass, fed with ciphertext as it arrives (e.g. while a blob downloads). Plaintext is
    only available from it once `verify` has succeeded."""

    def __init__(self, options: PrivateOptions, public: PublicOptions) -> None:
        self._options = options
        self._mac = _hmac(options)
        self._expected = public.hmac
        self._verified = False

    def update(self, ciphertext: bytes | memoryview) -> None:
        self._mac.update(ciphertext)

    def verify(self) -> None:
        if not hmac_compare.compare_digest(self._mac.finalize(), self._expected):
            raise LayerDecryptionError(f"{HMAC_MISMATCH}: layer HMAC does not match")
        self._verified = True

    def plaintext(self, ciphertext: BinaryIO) -> io.BufferedReader:
        """A reader of the plaintext of the (seekable) ciphertext that was fed to `update`."""
        if not self._verified:
            raise LayerDecryptionError("layer HMAC not verified: no plaintext before authentication")
        ciphertext.seek(0)
        return io.BufferedReader(_DecryptingReader(ciphertext, self._options), CHUNK_SIZE)


def verify_file(ciphertext: BinaryIO, options: PrivateOptions, public: PublicOptions) -> HmacCheck:
    """Pass one over a seekable ciphertext file: the HMAC, then back to its start."""
    check = HmacCheck(options, public)
    buffer = bytearray(CHUNK_SIZE)
    view = memoryview(buffer)
    while n := ciphertext.readinto(buffer):  # type: ignore[attr-defined]
        check.update(view[:n])
    check.verify()
    ciphertext.seek(0)
    return check


def decrypt_file(
    ciphertext: BinaryIO, plaintext: BinaryIO, options: PrivateOptions, public: PublicOptions
) -> int:
    """Both passes over a seekable ciphertext file (the HMAC, then AES-CTR into `plaintext`); nothing
    is written unless the HMAC matches. Returns the plaintext size."""
    verify_file(ciphertext, options, public)
    return _transform(ciphertext, plaintext, _ctr(options), None)


def encrypt_file(
    plaintext: BinaryIO, ciphertext: BinaryIO, options: PrivateOptions | None = None
) -> tuple[PrivateOptions, PublicOptions]:
    """Encrypt a stream (tests, benchmarks, and images made without skopeo); the private options carry
    the plaintext digest as ocicrypt records it."""
    options = options or new_private_options()
    mac = _hmac(options)
    digest = hashlib.sha256()
    _transform(plaintext, ciphertext, _ctr(options), mac, digest)
    private = PrivateOptions(options.symkey, options.nonce, f"sha256:{digest.hexdigest()}")
    return private, PublicOptions(hmac=mac.finalize())


def _transform(
    src: BinaryIO,
    dst: BinaryIO,
    context: CipherContext,
    mac: crypto_hmac.HMAC | None,
    digest: hashlib._Hash | None = None,
) -> int:
    """CTR over `src` into `dst` in chunks; the MAC (encryption) covers the output."""
    buffer = bytearray(CHUNK_SIZE)
    out = bytearray(CHUNK_SIZE + 15)
    view, out_view = memoryview(buffer), memoryview(out)
    total = 0
    while n := src.readinto(buffer):  # type: ignore[attr-defined]
        if digest is not None:
            digest.update(view[:n])
        written = context.update_into(view[:n], out)
        if mac is not None:
            mac.update(out_view[:written])
        dst.write(out_view[:written])
        total += n
    context.finalize()
    return total
