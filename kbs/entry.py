"""Console-script entry point of `kbs` (see protocols.extras for why it is thin)."""

from protocols.extras import launcher

kbs = launcher("kbs", "kbs.cli", extra="kbs")
