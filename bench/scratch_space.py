"""What encrypting the scratch disk adds to a pod VM's boot (`bench.boot --scratch-space GIB`): the
scratch unit, which the agent waits for, prints `peerpods-scratch-space: ready in <s> s` on the
console (finding the disk, LUKS2 format with the ephemeral key, open, mkfs, mount)."""

from __future__ import annotations

import re
from collections.abc import Iterable

READY = re.compile(r"peerpods-scratch-space: ready in (?P<seconds>[\d.]+) s")


def scratch_seconds(console_lines: Iterable[str]) -> float | None:
    """The scratch unit's time from the console, or None if it did not run."""
    for line in console_lines:
        match = READY.search(line)
        if match:
            return float(match["seconds"])
    return None


def environment(gib: int) -> dict[str, str]:
    """The adaptor settings that give each pod VM an encrypted scratch disk of `gib` GiB."""
    return {"ENABLE_SCRATCH_SPACE": "true", "SCRATCH_SPACE_SIZE": str(gib)} if gib else {}
