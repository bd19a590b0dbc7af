"""StopVM through a real adaptor when its record is not the one-call case: written by an adaptor from
before `delete_info`, or left half-done by a crash between TerminateInstances and the record's removal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections import Counter
from pathlib import Path

from protocols.ttrpc.status import TtrpcError
from shimdriver.driver import shim_annotations
from tests.adaptor_process import AdaptorProcess
from tests.chaos.harness import aws_cloud

SANDBOX = "stop-record"


def _database(adaptor: AdaptorProcess) -> contextlib.closing[sqlite3.Connection]:
    return contextlib.closing(sqlite3.connect(adaptor.state_dir / "sandboxes.db", isolation_level=None))


def forget_delete_info(adaptor: AdaptorProcess) -> None:
    """Rewrite the stopped adaptor's record as an adaptor without `delete_info` wrote it."""
    with _database(adaptor) as db:
        [(text,)] = db.execute("SELECT record FROM sandboxes WHERE id = ?", (SANDBOX,)).fetchall()
        document = json.loads(text)
        assert document.pop("delete_info") == {"public_ip": "no"}
        db.execute("UPDATE sandboxes SET record = ? WHERE id = ?", (json.dumps(document), SANDBOX))


def states(adaptor: AdaptorProcess) -> list[str]:
    with _database(adaptor) as db:
        return [state for (state,) in db.execute("SELECT state FROM sandboxes")]


async def test_a_record_without_delete_info_is_stopped_by_the_full_delete(
    tmp_path: Path, moto_url: str
) -> None:
    async with aws_cloud(tmp_path / "cloud", moto_url=moto_url) as cloud:
        adaptor = AdaptorProcess(tmp_path / "node", cloud.adaptor_env("legacy-record"))
        adaptor.directory.mkdir()
        await adaptor.start()
        try:
            await adaptor.hypervisor.create_vm(SANDBOX, shim_annotations("legacy", "ns"))
            await adaptor.hypervisor.start_vm(SANDBOX)
        finally:
            await adaptor.stop()
        forget_delete_info(adaptor)
        await adaptor.start()  # the upgraded adaptor resumes the pod from the old record
        try:
            before = Counter(cloud.front.calls)
            await adaptor.hypervisor.stop_vm(SANDBOX)
            stopped = Counter(cloud.front.calls)
        finally:
            await adaptor.stop()
        assert stopped - before == {"DescribeInstances": 1, "DescribeAddresses": 1, "TerminateInstances": 1}
        assert await cloud.owned_instances("legacy-record") == {}
        assert states(adaptor) == []


async def test_a_crash_after_terminate_converges_at_the_next_start(tmp_path: Path, moto_url: str) -> None:
    terminating = asyncio.Event()
    never = asyncio.Event()

    async def hold(action: str) -> None:
        if action == "TerminateInstances":  # EC2 has it; the answer never reaches the adaptor
            terminating.set()
            await never.wait()

    async with aws_cloud(tmp_path / "cloud", moto_url=moto_url, hold=hold) as cloud:
        adaptor = AdaptorProcess(tmp_path / "node", cloud.adaptor_env("crash-stop"))
        adaptor.directory.mkdir()
        await adaptor.start()
        stop = None
        try:
            await adaptor.hypervisor.create_vm(SANDBOX, shim_annotations("crash", "ns"))
            await adaptor.hypervisor.start_vm(SANDBOX)
            stop = asyncio.ensure_future(adaptor.hypervisor.stop_vm(SANDBOX))
            await terminating.wait()
        finally:
            await adaptor.kill()
            never.set()
            if stop is not None:
                with contextlib.suppress(TtrpcError, OSError, EOFError):
                    await stop
        assert states(adaptor) == ["stopping"]  # killed between TerminateInstances and the record's removal
        assert await cloud.owned_instances("crash-stop") == {}
        await adaptor.start()  # reconciliation: the record goes, nothing is deleted twice
        try:
            assert states(adaptor) == []
            before = Counter(cloud.front.calls)
            await adaptor.hypervisor.stop_vm(SANDBOX)  # the shim's retry: nothing left to do
            assert Counter(cloud.front.calls) == before
        finally:
            await adaptor.stop()
        await cloud.fleet.settled()
        assert not cloud.fleet.running and not cloud.fleet.errors
