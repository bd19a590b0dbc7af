"""The KBS client: the admin API (`AdminClient`) and the `kbs-client` command, over the guest side of
RCAR 0.4.0 in `protocols.kbs_client` (re-exported here). The command may load pod VM attesters."""

from kbs.client.admin import AdminClient, mint_admin_token
from protocols.kbs_client.rcar import EvidenceProvider, KbsClient
from protocols.kbs_client.teekey import TeeKeyPair
from protocols.kbs_client.token import Token

__all__ = ["AdminClient", "EvidenceProvider", "KbsClient", "TeeKeyPair", "Token", "mint_admin_token"]
