"""`python -m podvm.image build`: build (or reuse) the pod VM image and print where it is."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from podvm.image.build import build
from podvm.image.config import DEFAULT_SOURCE_DATE_EPOCH, ImageConfig, default_cache_dir, host_mirror
from podvm.image.errors import ImageBuildError


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m podvm.image", description=__doc__)
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub = commands.add_parser("build", help="build the pod VM disk image (qcow2, raw, manifest)")
    sub.add_argument(
        "--cache-dir",
        type=Path,
        default=default_cache_dir(),
        help="stages and images (default: $PEERPODS_IMAGE_CACHE or %(default)s)",
    )
    sub.add_argument("--mirror", default=None, help="Debian mirror (default: the one apt uses here)")
    sub.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="GROUP",
        help="also install this optional dependency group of the project (repeatable)",
    )
    sub.add_argument(
        "--kata-agent",
        type=Path,
        default=None,
        metavar="PATH",
        help="install this upstream kata-agent binary in place of the stand-in agent",
    )
    sub.add_argument(
        "--source-date-epoch",
        type=int,
        default=DEFAULT_SOURCE_DATE_EPOCH,
        help="timestamp for every file in the image (default: %(default)s)",
    )
    sub.add_argument("--force", action="store_true", help="rebuild the image even if it is cached")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    config = ImageConfig(
        cache_dir=args.cache_dir,
        mirror=args.mirror or host_mirror(),
        extras=tuple(args.extra),
        source_date_epoch=args.source_date_epoch,
        kata_agent=args.kata_agent,
    )
    try:
        result = build(config, force=args.force)
    except ImageBuildError as exc:
        print(f"podvm image build failed: {exc}", file=sys.stderr)
        return 1
    print(f"qcow2:    {result.qcow2}")
    print(f"raw:      {result.raw}")
    print(f"manifest: {result.manifest}")
    return 0
