"""RCAR sessions (cookie `kbs-session-id`), kept in SQLite so that KBS replicas share them.

Why a shared SQLite file (WAL mode) rather than a sealed stateless cookie: an attested session holds
the attestation token, which grows with init data and device evidence (tens of KiB) -- too big for a
cookie header -- and a server-side record makes the state change one-way: a nonce is consumed exactly
once (`Authed` -> `Attested` is a conditional UPDATE), where a sealed cookie for the `Authed` state
could be presented again until it expires. The cookie stays upstream's opaque 32-hex UUID. WAL lets
readers run beside the single writer; every statement is a short indexed operation, so callers run
them inline. The file must be on a local filesystem shared by the replicas (processes on one host or
one pod volume); SQLite locking is not safe over network filesystems.

A session expires `timeout` after `/auth` (not extended by `/attest`), as upstream; expired rows are
deleted when read and swept at most once a minute.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TIMEOUT_SECONDS = 5 * 60
SWEEP_INTERVAL_SECONDS = 60.0
_ID = re.compile(r"[0-9a-f]{32}")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS kbs_protocol_session (
    id TEXT PRIMARY KEY,
    tee TEXT NOT NULL,
    nonce TEXT NOT NULL,
    expires REAL NOT NULL,
    token TEXT
);
CREATE INDEX IF NOT EXISTS kbs_protocol_session_expires ON kbs_protocol_session (expires);
"""


def _create_private(path: Path) -> None:
    """The database file readable by its owner only (it holds attestation tokens), in a 0700
    directory when this creates it; SQLite gives its -wal and -shm files the database's mode."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            file.chmod(0o600)  # made by an earlier version with the umask's mode


class SessionStoreError(Exception):
    """The session database cannot be opened or used."""


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    tee: str
    nonce: str
    expires: float  # unix time
    token: str | None = None  # set once attested

    @property
    def attested(self) -> bool:
        return self.token is not None


class SessionStore:
    def __init__(
        self,
        path: Path | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`path` None keeps sessions in this process's memory (a single replica only)."""
        self.timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._next_sweep = 0.0
        try:
            if path is not None:
                _create_private(path)
            self._db = sqlite3.connect(
                ":memory:" if path is None else str(path),
                timeout=10.0,
                isolation_level=None,  # autocommit: each statement is its own transaction
                check_same_thread=False,
            )
            if path is not None:
                self._db.execute("PRAGMA journal_mode=WAL")
                # Sessions are short-lived: losing the last commits on power loss only ends handshakes.
                self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise SessionStoreError(f"cannot open session store {path}: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _run(self, sql: str, args: tuple[object, ...]) -> sqlite3.Cursor:
        try:
            with self._lock:
                return self._db.execute(sql, args)
        except sqlite3.Error as exc:
            raise SessionStoreError(f"session store: {exc}") from None

    def create(self, tee: str, nonce: str) -> Session:
        now = self._clock()
        session = Session(uuid.uuid4().hex, tee, nonce, now + self.timeout)
        self._run(
            "INSERT INTO kbs_protocol_session (id, tee, nonce, expires) VALUES (?, ?, ?, ?)",
            (session.id, session.tee, session.nonce, session.expires),
        )
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_INTERVAL_SECONDS
            self._run("DELETE FROM kbs_protocol_session WHERE expires <= ?", (now,))
        return session

    def get(self, session_id: str) -> Session | None:
        """The live session with this id; None when unknown, malformed or expired (then deleted)."""
        if not _ID.fullmatch(session_id):
            return None
        row = self._run(
            "SELECT id, tee, nonce, expires, token FROM kbs_protocol_session WHERE id = ?", (session_id,)
        ).fetchone()
        if row is None:
            return None
        session = Session(*row)
        if session.expires <= self._clock():
            self._run("DELETE FROM kbs_protocol_session WHERE id = ?", (session_id,))
            return None
        return session

    def attest(self, session_id: str, token: str) -> bool:
        """Record the token of a live, not yet attested session; False when that is no longer so."""
        cursor = self._run(
            "UPDATE kbs_protocol_session SET token = ? WHERE id = ? AND token IS NULL AND expires > ?",
            (token, session_id, self._clock()),
        )
        return cursor.rowcount == 1
