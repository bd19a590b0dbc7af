"""Sandbox records, persisted in SQLite so that a restarted adaptor knows every pod it started.

WAL mode: each committed write survives the adaptor being killed at any instant. What a power cut
might lose is covered by reconciliation, which deletes owned instances no record refers to.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any


class SandboxState(StrEnum):
    CREATED = "created"  # CreateVM done, no instance yet
    STARTING = "starting"  # StartVM in progress: an instance may exist
    RUNNING = "running"  # instance up, tunnel connected at least once
    FAILED = "failed"  # StartVM failed; its instance was deleted
    LOST = "lost"  # the instance vanished while the pod ran
    STOPPING = "stopping"  # StopVM in progress or its instance delete failed


@dataclass(frozen=True)
class SandboxRecord:
    id: str
    pod_name: str
    pod_namespace: str
    instance_name: str
    socket_path: str
    state: SandboxState = SandboxState.CREATED
    netns: str = ""
    # apf.json's pod-network object (upstream's JSON) when the shim named a pod netns; its
    # vxlan-id is how VNIs stay allocated across restarts (upstream counts from 0 again).
    pod_network: dict[str, Any] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    instance_id: str = ""
    # What the provider's create said about deleting the instance (Instance.delete_info); records
    # written before it existed decode with none, and their StopVM takes the full delete.
    delete_info: dict[str, str] = field(default_factory=dict)
    ips: tuple[str, ...] = ()
    forwarder_port: int | None = None
    error: str = ""
    updated: float = 0.0

    def evolve(self, **changes: object) -> SandboxRecord:
        return replace(self, **changes)  # type: ignore[arg-type]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS sandboxes (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    record TEXT NOT NULL
)
"""


class StateStore:
    def __init__(self, path: Path) -> None:
        _make_private(path)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def put(self, record: SandboxRecord) -> SandboxRecord:
        record = record.evolve(updated=time.time())
        document = asdict(record)
        document["ips"] = list(record.ips)
        self._db.execute(
            "INSERT OR REPLACE INTO sandboxes (id, state, record) VALUES (?, ?, ?)",
            (record.id, record.state.value, json.dumps(document)),
        )
        return record

    def get(self, sandbox_id: str) -> SandboxRecord | None:
        row = self._db.execute("SELECT record FROM sandboxes WHERE id = ?", (sandbox_id,)).fetchone()
        return _decode(row[0]) if row else None

    def all(self) -> list[SandboxRecord]:
        return [_decode(row[0]) for row in self._db.execute("SELECT record FROM sandboxes ORDER BY id")]

    def delete(self, sandbox_id: str) -> None:
        self._db.execute("DELETE FROM sandboxes WHERE id = ?", (sandbox_id,))

    def close(self) -> None:
        self._db.close()


def _make_private(path: Path) -> None:
    """The records hold every pod's initdata: the directory 0700, the database 0600 (SQLite gives its
    -wal and -shm files the database's mode). Earlier versions left 0755/0644; corrected here."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.parent.chmod(0o700)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            file.chmod(0o600)


def _decode(text: str) -> SandboxRecord:
    document = json.loads(text)
    document["state"] = SandboxState(document["state"])
    document["ips"] = tuple(document["ips"])
    return SandboxRecord(**document)
