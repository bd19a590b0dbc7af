"""RCAR sessions (cookie `kbs-session-id`), kept in the `kbs_protocol_session` namespace of the
storage backend (as upstream), so that any replica can answer any step of a handshake.

Why a server-side record rather than a sealed stateless cookie: an attested session holds the
attestation token, which grows with init data and device evidence (tens of KiB) -- too big for a
cookie header -- and a stored record makes the state change one-way: a nonce is spent exactly once,
because `Authed` -> `Attested` is a compare-and-set of the stored record (`KeyValueStorage.replace`),
which one replica alone wins. The cookie stays upstream's opaque 32-hex UUID.

A session expires `timeout` after `/auth` (not extended by `/attest`), as upstream; an expired
record is deleted when read, and the rest are swept every minute by one replica (`Sweeper`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from kbs.storage import KeyValueStorage, StorageError

log = logging.getLogger(__name__)
DEFAULT_TIMEOUT_SECONDS = 5 * 60
_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    tee: str
    nonce: str
    expires: float  # unix time
    token: str | None = None  # set once attested
    record: bytes = field(default=b"", repr=False, compare=False)  # as stored: what a change compares

    @property
    def attested(self) -> bool:
        return self.token is not None

    def encode(self) -> bytes:
        return orjson.dumps(
            {"tee": self.tee, "nonce": self.nonce, "expires": self.expires, "token": self.token}
        )


def _decode(session_id: str, record: bytes) -> Session | None:
    """The stored session; None for a record this version cannot read (treated as absent)."""
    try:
        doc = orjson.loads(record)
        session = Session(session_id, doc["tee"], doc["nonce"], float(doc["expires"]), doc["token"], record)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        log.warning("session %s: unreadable record ignored", session_id)
        return None
    return session


class SessionStore:
    """Every method raises `StorageError` (`StorageUnavailable` while the backend is down)."""

    def __init__(
        self,
        storage: KeyValueStorage,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.timeout = timeout
        self._clock = clock

    async def create(self, tee: str, nonce: str) -> Session:
        session = Session(uuid.uuid4().hex, tee, nonce, self._clock() + self.timeout)
        record = session.encode()
        if not await self.storage.set(session.id, record, overwrite=False):
            raise StorageError("session id collision")  # 122 random bits: a broken random source
        return Session(session.id, tee, nonce, session.expires, None, record)

    async def get(self, session_id: str) -> Session | None:
        """The live session with this id; None when unknown, malformed or expired (then deleted)."""
        if not _ID.fullmatch(session_id):
            return None
        record = await self.storage.get(session_id)
        session = None if record is None else _decode(session_id, record)
        if session is None:
            return None
        if session.expires <= self._clock():
            await self.storage.delete(session_id)
            return None
        return session

    async def attest(self, session: Session, token: str) -> bool:
        """Record the token of `session` if it is still live and exactly as read (not attested by
        another request meanwhile); False when that is no longer so."""
        if session.token is not None or session.expires <= self._clock():
            return False
        attested = Session(session.id, session.tee, session.nonce, session.expires, token)
        return await self.storage.replace(session.id, session.record, attested.encode())

    async def sweep(self) -> int:
        """Delete every expired session; how many were."""
        now, removed = self._clock(), 0
        for session_id in await self.storage.list():
            record = await self.storage.get(session_id)
            session = None if record is None else _decode(session_id, record)
            if session is not None and session.expires <= now:
                await self.storage.delete(session_id)
                removed += 1
        return removed


SWEEP_INTERVAL_SECONDS = 60.0
SWEEP_KEY = "session-sweep"
BACKOFF_SECONDS = (5.0, 300.0)


class Sweeper:
    """Upstream's background cleanup (every 60 s, backing off 5 s -> 300 s on errors), once for all
    replicas: each wakes at its own jittered time and sweeps only if it moves the shared due time
    (`session-sweep` in the `kbs` namespace) forward by compare-and-set, so one replica per minute
    walks the sessions however many run."""

    def __init__(
        self,
        sessions: SessionStore,
        lease: KeyValueStorage,
        *,
        interval: float = SWEEP_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sessions = sessions
        self._lease = lease
        self._interval = interval
        self._clock = clock
        self._failures = 0
        self._stopping = asyncio.Event()

    async def claim(self) -> bool:
        """Whether this replica sweeps now (the sweep is due, and this replica moved it on)."""
        now = self._clock()
        due = str(now + self._interval).encode()
        current = await self._lease.get(SWEEP_KEY)
        if current is None:
            return await self._lease.set(SWEEP_KEY, due, overwrite=False)
        try:
            if float(current) > now:
                return False
        except ValueError:
            pass  # unreadable: take it over
        return await self._lease.replace(SWEEP_KEY, current, due)

    async def run_once(self) -> float:
        """One wake-up: sweep if this replica's turn; the seconds to sleep until the next."""
        try:
            if await self.claim():
                removed = await self._sessions.sweep()
                if removed:
                    log.info("swept %d expired sessions", removed)
        except StorageError as exc:
            self._failures += 1
            low, high = BACKOFF_SECONDS
            delay = min(high, low * 2.0 ** (self._failures - 1))
            log.warning("session sweep failed (retry in %.0f s): %s", delay, exc)
            return delay
        self._failures = 0
        return self._interval * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret

    async def run(self) -> None:
        """Until `stop`."""
        while not self._stopping.is_set():
            delay = await self.run_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def stop(self, task: asyncio.Task[None]) -> None:
        """End `task` (running `run`): cancelled, and told to stop as well, since a storage client
        may swallow a cancellation that lands mid-call (the sweep would then sleep on, and a
        shutdown awaiting it would never end)."""
        self._stopping.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
