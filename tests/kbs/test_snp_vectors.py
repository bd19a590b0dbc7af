"""Real Genoa SNP evidence sent to `/attest` (../shared/vectors/snp; skipped when absent).

The evidence was produced for some other runtime data, so it can never match a fresh nonce: the KBS
must refuse it for its report-data binding alone -- which shows that the VCEK chain and the report
signature were checked and passed first -- and refuse it for its signature once a byte is changed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.kbs.support import Guest, RunningKbs, error_variant, start_kbs
from tests.verifier import vectors_dir

pytestmark = pytest.mark.vectors


@pytest.fixture(scope="module")
def genoa_evidence() -> Any:
    return json.loads((vectors_dir("snp") / "genoa-evidence.json").read_bytes())


@pytest.fixture
async def server(tmp_path: Path, backend: str) -> AsyncIterator[RunningKbs]:
    running = await start_kbs(tmp_path, backend=backend)
    yield running
    await running.runner.cleanup()


async def attest_with(server: RunningKbs, evidence: Any) -> tuple[int, Any]:
    async with Guest(server.url, tee="snp", evidence=lambda _digest: evidence) as guest:
        status, _ = await guest.auth()
        assert status == 200
        return await guest.attest()


async def test_genoa_evidence_is_refused_for_its_binding_alone(
    server: RunningKbs, genoa_evidence: Any
) -> None:
    status, doc = await attest_with(server, genoa_evidence)
    assert (status, error_variant(doc)) == (401, "AttestationError")
    assert "verify TEE evidence failed: report_data_mismatch" in doc["detail"]
    assert server.broker.metrics.value("kbs_attestation_failures_total", tee_type="snp") == 1


async def test_genoa_evidence_with_one_byte_changed_is_refused_for_its_signature(
    server: RunningKbs, genoa_evidence: Any
) -> None:
    tampered = json.loads(json.dumps(genoa_evidence))
    tampered["attestation_report"]["measurement"][0] ^= 0x01
    status, doc = await attest_with(server, tampered)
    assert (status, error_variant(doc)) == (401, "AttestationError")
    assert "verify TEE evidence failed: bad_signature" in doc["detail"]
