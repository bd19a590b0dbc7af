"""The attestation service inside the KBS process (`coco_as_builtin`).

Verification is CPU work that threads cannot parallelise (the GIL) and only slow down with
hand-offs, so it runs inline -- worker processes give the parallelism -- unless a verifier may have
to fetch collateral over the network (then the service's async path).

With `shared` (a storage replicas share that is not LocalFs, whose files the service reads itself),
attestation policies and reference values are kept in the `attestation_service_policy` and
`reference_value` namespaces and mirrored into the service: a write bumps a generation key in the
`kbs` namespace, and every evaluation first reads that one key, reloading both namespaces when it
moved, so a change through one replica holds on all at their next request. The token signing key is
shared the same way (`token-signer` in `kbs`, first replica's key wins) unless one is configured.
"""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kbs.attestation.base import AttestationRefused, AttestationUnavailable
from kbs.jwt import PublicKey
from kbs.storage import KeyValueStorage, StorageError, StorageUnavailable
from kbs.token import own_keys_of
from verifier.api import AsyncVerifier
from verifier.ear import EarError, EarSigner
from verifier.errors import VerificationError
from verifier.policy import PolicyError
from verifier.rvps import RvpsError
from verifier.service import AttestationService, RequestError, VerificationRequest

GENERATION_KEY = "attestation-service-generation"
SIGNER_KEY = "token-signer"
_REFUSALS = (VerificationError, RequestError, PolicyError, EarError, RvpsError)


@dataclass
class SharedState:
    """The namespaces the service's state is mirrored from (see the module's docstring)."""

    policies: KeyValueStorage
    values: KeyValueStorage
    kbs: KeyValueStorage
    share_signer: bool


class BuiltinAttestation:
    def __init__(self, service: AttestationService, shared: SharedState | None = None) -> None:
        self.service = service
        self._shared = shared
        self._seen: bytes | None = None
        self._loaded = False

    async def start(self) -> None:
        if self._shared is None:
            return
        try:
            if self._shared.share_signer:
                self.service.signer = EarSigner(await _shared_key(self._shared.kbs))
            await self._refresh(self._shared)
        except (StorageError, AttestationRefused) as exc:
            raise StorageError(f"attestation service state: {exc}") from None

    async def close(self) -> None:
        return None

    def own_keys(self) -> Sequence[PublicKey]:
        return own_keys_of(self.service.jwks())

    async def _refresh(self, shared: SharedState) -> None:
        """Reload policies and reference values when the generation moved (one read when not)."""
        generation = await shared.kbs.get(GENERATION_KEY)
        if self._loaded and generation == self._seen:
            return
        for policy_id in await shared.policies.list():
            stored = await shared.policies.get(policy_id)
            if stored is None:
                continue
            text = stored.decode("utf-8", "replace")
            if policy_id not in self.service.list_policies() or self.service.get_policy(policy_id) != text:
                try:
                    self.service.set_policy(policy_id, text)  # checked by the replica that stored it
                except PolicyError as exc:
                    raise AttestationRefused(f"stored policy {policy_id!r}: {exc}") from None
        records = {}
        try:
            for name in await shared.values.list():
                stored = await shared.values.get(name)
                if stored is not None:
                    records[name] = json.loads(stored)
            self.service.rvps.install(records)
        except (RvpsError, ValueError) as exc:
            raise AttestationRefused(f"stored reference values: {exc}") from None
        self._seen, self._loaded = generation, True

    async def _shared_call(self) -> SharedState | None:
        """The shared state, refreshed; a storage outage is `AttestationUnavailable`."""
        if self._shared is None:
            return None
        try:
            await self._refresh(self._shared)
        except StorageUnavailable as exc:
            raise AttestationUnavailable(str(exc)) from None
        except StorageError as exc:
            raise AttestationRefused(str(exc)) from None
        return self._shared

    async def _bump(self, shared: SharedState) -> None:
        generation = uuid.uuid4().hex.encode()
        await shared.kbs.set(GENERATION_KEY, generation)
        self._seen = generation  # this replica holds the change already

    async def evaluate(self, requests: Sequence[VerificationRequest], policy_ids: Sequence[str]) -> str:
        await self._shared_call()
        try:
            kinds = {type(self.service.verifiers.get(request.tee)) for request in requests}
            if any(_fetches_collateral(kind) for kind in kinds):
                return await self.service.evaluate_async(requests, policy_ids)
            return self.service.evaluate(requests, policy_ids)
        except _REFUSALS as exc:
            raise AttestationRefused(str(exc)) from None

    async def set_policy(self, policy_id: str, policy: str) -> None:
        shared = await self._shared_call()
        try:
            await asyncio.to_thread(self.service.set_policy, policy_id, policy)  # compiles: seconds
        except PolicyError as exc:
            raise AttestationRefused(str(exc)) from None
        if shared is not None:
            await self._store(shared.policies, policy_id, policy.encode("utf-8"), shared)

    async def _store(self, namespace: KeyValueStorage, key: str, value: bytes, shared: SharedState) -> None:
        try:
            await namespace.set(key, value)
            await self._bump(shared)
        except StorageUnavailable as exc:
            raise AttestationUnavailable(str(exc)) from None
        except StorageError as exc:
            raise AttestationRefused(str(exc)) from None

    async def register_reference_value(self, message: bytes) -> None:
        shared = await self._shared_call()
        try:
            names = await asyncio.to_thread(self.service.register_reference_value, message)
        except RvpsError as exc:
            raise AttestationRefused(str(exc)) from None
        if shared is not None:
            for name in names:
                record = self.service.rvps.record(name)
                await self._store(shared.values, name, json.dumps(record).encode("utf-8"), shared)

    async def query_reference_value(self, name: str) -> Any | None:
        await self._shared_call()
        return self.service.query_reference_value(name)


async def _shared_key(kbs: KeyValueStorage) -> ec.EllipticCurvePrivateKey:
    """The replicas' token signing key: this replica's fresh key unless another stored one first."""
    fresh = ec.generate_private_key(ec.SECP256R1())
    pem = fresh.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    await kbs.set(SIGNER_KEY, pem, overwrite=False)
    stored = await kbs.get(SIGNER_KEY)
    try:
        key = serialization.load_pem_private_key(stored or b"", password=None)
    except ValueError as exc:
        raise StorageError(f"stored {SIGNER_KEY} is not a PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise StorageError(f"stored {SIGNER_KEY} is not an EC key")
    return key


@functools.cache
def _fetches_collateral(kind: type) -> bool:
    """Whether a verifier class has the async path (a runtime Protocol check is slow: once per class)."""
    return issubclass(kind, AsyncVerifier)
