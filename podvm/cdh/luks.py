"""LUKS2 with the `cryptsetup` command (Debian cryptsetup-bin), as upstream's CDH does. The key only
ever goes to cryptsetup's stdin (`--key-file -`): never into a file, an argument or the environment.

An ephemeral key is 4096 random bytes: a password hash cannot make it stronger, so its keyslot uses
PBKDF2 at cryptsetup's minimum cost, which keeps the scratch disk's boot cost down. A key from the KBS
may be a short passphrase, so it gets memory-hard Argon2id, its memory capped at 64 MiB so a small
pod VM can open it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass

log = logging.getLogger(__name__)
CRYPTSETUP = "cryptsetup"
TIMEOUT_S = 600.0
# One keyslot (a 512-bit key split into 4000 stripes: 250 KiB) instead of 16 MiB of keyslot area
# that luksFormat would write: part of the scratch disk's boot cost.
_FAST_KDF = ("--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--luks2-keyslots-size", "256k")
_HARD_KDF = ("--pbkdf", "argon2id", "--pbkdf-memory", "65536", "--iter-time", "1000")
_INTEGRITY = ("--integrity", "hmac-sha256", "--integrity-no-wipe", "--integrity-no-journal")


# libdevmapper makes the /dev/mapper node itself instead of waiting for udev, which is busy (and
# slow, emulated) while the pod VM boots: seconds per cryptsetup open.
_ENV = {**os.environ, "DM_DISABLE_UDEV": "1"}


class CommandFailed(Exception):
    """A tool exited non-zero; `str()` is its name, status and the tail of its stderr."""


@dataclass(frozen=True, slots=True)
class Completed:
    returncode: int
    stdout: bytes


async def run(argv: list[str], stdin: bytes | None = None, check: bool = True) -> Completed:
    """Run `argv` (no shell), feeding `stdin`; CommandFailed on a non-zero exit when `check`."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            env=_ENV,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise CommandFailed(f"{argv[0]}: {exc.strerror}") from None
    try:
        async with asyncio.timeout(TIMEOUT_S):
            stdout, stderr = await process.communicate(stdin)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise CommandFailed(f"{argv[0]} {argv[1]}: no answer in {TIMEOUT_S:.0f} s") from None
    if check and process.returncode != 0:
        tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise CommandFailed(f"{argv[0]} {argv[1]}: exit status {process.returncode}: {tail[0][:300]}")
    return Completed(process.returncode or 0, stdout)


async def is_luks2(device: str) -> bool:
    return (await run([CRYPTSETUP, "isLuks", "--type", "luks2", device], check=False)).returncode == 0


async def format_device(device: str, key: bytes, *, ephemeral: bool, integrity: bool) -> None:
    """luksFormat as LUKS2 (aes-xts-plain64, 512-bit key, 4 KiB sectors); wipes what was there."""
    argv = [CRYPTSETUP, "luksFormat", "--batch-mode", "--type", "luks2", "--cipher", "aes-xts-plain64"]
    argv += ["--key-size", "512", "--sector-size", "4096", "--key-file", "-"]
    argv += [*(_FAST_KDF if ephemeral else _HARD_KDF), *(_INTEGRITY if integrity else ()), device]
    await run(argv, stdin=key)


async def open_device(device: str, name: str, key: bytes) -> str:
    """Activate the mapping `/dev/mapper/<name>` (returned); a wrong key fails."""
    await run([CRYPTSETUP, "open", "--type", "luks2", "--key-file", "-", device, name], stdin=key)
    return f"/dev/mapper/{name}"


async def key_opens(device: str, key: bytes) -> bool:
    """Whether `key` opens a keyslot of `device`, without activating anything."""
    argv = [CRYPTSETUP, "open", "--test-passphrase", "--type", "luks2", "--key-file", "-", device]
    return (await run(argv, stdin=key, check=False)).returncode == 0


async def close_device(name: str) -> None:
    await run([CRYPTSETUP, "close", name])
