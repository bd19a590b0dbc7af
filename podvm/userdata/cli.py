"""`process-user-data`: the pod VM's first-boot oneshot (systemd `process-user-data.service`)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from podvm.userdata.detect import DMI_DIR
from podvm.userdata.errors import UserDataError
from podvm.userdata.provision import ProvisionConfig, provision_files
from podvm.userdata.retrieve import DEFAULT_FETCH_TIMEOUT, DEFAULT_RETRY_DELAY
from podvm.userdata.sources import (
    AWS_IMDS_URL,
    AZURE_IMDS_URL,
    DEFAULT_CIDATA_DIR,
    GCP_METADATA_URL,
    SOURCE_NAMES,
    SourceSettings,
)
from protocols import version

PROG = "process-user-data"
log = logging.getLogger(PROG)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Process the pod VM's user data: write the peer-pod config files and apply initdata.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    prov = sub.add_parser(
        "provision-files",
        help="fetch the cloud-config and write the allow-listed files under /run/peerpod",
        description=(
            "Fetch the cloud-config user data (config drive or cloud metadata service), retrying until "
            "the timeout; write only the allow-listed /run/peerpod files; then decode /run/peerpod/initdata "
            "(a default one is written when absent), write its aa.toml/cdh.toml/policy.rego entries and "
            "its digest to /run/peerpod/initdata.digest."
        ),
    )
    prov.add_argument(
        "-t",
        "--user-data-fetch-timeout",
        type=_positive_seconds,
        default=DEFAULT_FETCH_TIMEOUT,
        metavar="SECONDS",
        help="give up fetching user data after this long (default: %(default)g)",
    )
    prov.add_argument(
        "--retry-delay",
        type=_positive_seconds,
        default=DEFAULT_RETRY_DELAY,
        metavar="SECONDS",
        help="wait between fetch attempts (default: %(default)g)",
    )
    prov.add_argument(
        "--source",
        choices=(*SOURCE_NAMES, "auto"),
        default="auto",
        help="where to read user data; auto = config drive file if present, else the cloud named by DMI "
        "(default: %(default)s)",
    )
    prov.add_argument(
        "--root", type=Path, default=Path("/"), help="prefix for every file written (default: %(default)s)"
    )
    prov.add_argument(
        "--cidata-dir",
        type=Path,
        default=Path(DEFAULT_CIDATA_DIR),
        help="mounted config drive holding user-data (default: %(default)s)",
    )
    prov.add_argument(
        "--dmi-dir", type=Path, default=Path(DMI_DIR), help="sysfs DMI attributes (default: %(default)s)"
    )
    prov.add_argument("--aws-imds-url", default=AWS_IMDS_URL, help="AWS IMDS base URL (default: %(default)s)")
    prov.add_argument(
        "--azure-imds-url", default=AZURE_IMDS_URL, help="Azure IMDS base URL (default: %(default)s)"
    )
    prov.add_argument(
        "--gcp-metadata-url", default=GCP_METADATA_URL, help="GCP metadata base URL (default: %(default)s)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = version.parse_args(build_parser(), argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = ProvisionConfig(
        root=args.root,
        source=args.source,
        fetch_timeout=args.user_data_fetch_timeout,
        retry_delay=args.retry_delay,
        sources=SourceSettings(
            cidata_dir=args.cidata_dir,
            aws_imds_url=args.aws_imds_url,
            azure_imds_url=args.azure_imds_url,
            gcp_metadata_url=args.gcp_metadata_url,
        ),
        dmi_dir=args.dmi_dir,
    )
    try:
        provision_files(config)
    except UserDataError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
