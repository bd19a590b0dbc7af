"""The KBS client: the guest side of RCAR 0.4.0 (`KbsClient`), the admin API (`AdminClient`) and the
`kbs-client` command. Depends only on `protocols` (the wire format), aiohttp and cryptography."""

from kbs.client.admin import AdminClient, mint_admin_token
from kbs.client.rcar import EvidenceProvider, KbsClient
from kbs.client.teekey import TeeKeyPair
from kbs.client.token import Token

__all__ = ["AdminClient", "EvidenceProvider", "KbsClient", "TeeKeyPair", "Token", "mint_admin_token"]
