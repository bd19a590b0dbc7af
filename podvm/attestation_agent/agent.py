"""The attestation agent: evidence from the local TEE, attestation tokens from the KBS, and KBS
resources for workloads (the part of upstream's confidential-data-hub that the local API serves).

One agent per pod VM; it owns the TEE key of its resource session and serialises KBS conversations
(one RCAR session at a time, re-attesting when the KBS says the session is gone).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from podvm.attestation_agent.attester import Attester
from podvm.attestation_agent.config import AaConfig
from podvm.attestation_agent.errors import AttestationAgentError, ConfigError
from podvm.attestation_agent.initdata import BoundInitData
from protocols.kbs_client.errors import EvidenceError
from protocols.kbs_client.rcar import KbsClient
from protocols.kbs_client.teekey import TeeKeyPair

TOKEN_TYPE_KBS = "kbs"  # noqa: S105 - a token type name, not a secret


class AttesterEvidence:
    """The KBS client's evidence provider backed by one attester (no additional devices)."""

    def __init__(self, attester: Attester) -> None:
        self._attester = attester

    async def tee(self) -> str:
        return self._attester.tee

    async def primary_evidence(self, runtime_data_digest: bytes) -> Any:
        try:
            return await self._attester.get_evidence(runtime_data_digest)
        except AttestationAgentError as exc:
            raise EvidenceError(f"{self._attester.tee} evidence: {exc}") from exc

    async def additional_evidence(self, runtime_data_digest: bytes) -> str:
        return ""


class AttestationAgent:
    def __init__(
        self,
        attester: Attester,
        config: AaConfig,
        init_data: BoundInitData | None = None,
        *,
        rcar_retry_delay: float = 1.0,
    ) -> None:
        self.attester = attester
        self.config = config
        self.init_data = init_data
        self._retry_delay = rcar_retry_delay
        self._resource_client: KbsClient | None = None
        self._lock = asyncio.Lock()

    @property
    def tee(self) -> str:
        return self.attester.tee

    async def bind_init_data(self) -> bool:
        """Check (or extend) the init-data digest against the TEE; False when there is none to bind
        or the TEE has no init-data measurement. A mismatch raises `InitDataError`."""
        if self.init_data is None:
            return False
        return await self.attester.bind_init_data(self.init_data.digest)

    async def get_evidence(self, runtime_data: bytes) -> bytes:
        """Evidence JSON with `runtime_data` as report data (upstream's GetEvidence)."""
        evidence = await self.attester.get_evidence(runtime_data)
        return json.dumps(evidence, separators=(",", ":")).encode("utf-8")

    async def get_token(self, token_type: str) -> bytes:
        """`{"token": <EAR JWT>, "tee_keypair": <PEM>}` for a fresh key pair (upstream's GetToken)."""
        if token_type != TOKEN_TYPE_KBS:
            raise AttestationAgentError(f"unsupported token type {token_type[:40]!r}; only 'kbs' is")
        async with self._new_client() as client:
            token, key = await client.get_token()
        return json.dumps({"token": token.content, "tee_keypair": key.to_pem()}).encode("utf-8")

    async def get_resource(self, resource: str) -> bytes:
        """A KBS resource (`kbs:///repo/type/tag` or `repo/type/tag`), decrypted."""
        async with self._lock:
            if self._resource_client is None:
                self._resource_client = self._new_client()
            return await self._resource_client.get_resource(resource)

    async def close(self) -> None:
        async with self._lock:
            if self._resource_client is not None:
                await self._resource_client.close()
                self._resource_client = None

    def _new_client(self) -> KbsClient:
        kbs = self.config.kbs
        if kbs is None:
            raise ConfigError("no KBS configured: set [token_configs.kbs] url in aa.toml")
        return KbsClient(
            kbs.url,
            evidence_provider=AttesterEvidence(self.attester),
            tee_key=TeeKeyPair.generate(kbs.tee_key_algorithm),
            init_data=self.init_data.toml if self.init_data else None,
            ca_pem=kbs.cert,
            retry_delay=self._retry_delay,
        )
