"""Reference Value Provider Service: reference values in, by name out, for the attestation policy.

Registration takes upstream's message `{"version":"0.1.0","type":"sample","payload":"<base64 JSON>"}`
(Trustee `rvps`); the `sample` payload is a JSON object `{name: value, ...}`, unsigned, and every value
is stored as upstream's record `{"version","name","expiration","value"}` with an expiration 12 months
ahead. Upstream stores the expiration but never checks it; here an expired value reads as absent, so a
policy cannot keep trusting a stale measurement. The store is in memory, optionally mirrored to a JSON
file so values survive a restart; the file is the truth, re-read when its stamp changes, so replicas
sharing it see each other's registrations at their next query.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from verifier import sharedfile
from verifier.jsonutil import JsonError, strict_loads

MESSAGE_VERSION = "0.1.0"
RECORD_VERSION = "0.1.0"
VALIDITY_MONTHS = 12
MAX_MESSAGE_BYTES = 2 * 1024 * 1024  # upstream KBS's default request body limit
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_UNSUPPORTED_TYPES = frozenset({"swid", "corim"})

Clock = Callable[[], datetime]


class RvpsError(Exception):
    """A registration message or stored record was rejected; the message says why."""


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ReferenceValue:
    name: str
    value: Any
    expiration: datetime

    def expired(self, now: datetime) -> bool:
        return now > self.expiration

    def to_record(self) -> dict[str, Any]:
        """Upstream's stored form (`rvps::ReferenceValue`)."""
        return {
            "version": RECORD_VERSION,
            "name": self.name,
            "expiration": self.expiration.strftime(_TIME_FORMAT),
            "value": self.value,
        }

    @classmethod
    def from_record(cls, record: Any) -> ReferenceValue:
        if not isinstance(record, dict):
            raise RvpsError("stored reference value is not a JSON object")
        name, expiration = record.get("name"), record.get("expiration")
        if not isinstance(name, str) or not isinstance(expiration, str) or "value" not in record:
            raise RvpsError("stored reference value needs string 'name', string 'expiration' and 'value'")
        try:
            when = datetime.strptime(expiration, _TIME_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            raise RvpsError(
                f"reference value {name[:80]!r}: expiration {expiration[:40]!r} is not YYYY-MM-DDTHH:MM:SSZ"
            ) from None
        return cls(name=name, value=record["value"], expiration=when)


def _add_months(when: datetime, months: int) -> datetime:
    month0 = when.month - 1 + months
    year, month = when.year + month0 // 12, month0 % 12 + 1
    day = when.day
    while True:  # clamp to the month's last day, as chrono's checked_add_months does
        try:
            return when.replace(year=year, month=month, day=day, microsecond=0)
        except ValueError:
            day -= 1


def parse_message(message: str | bytes, now: datetime) -> list[ReferenceValue]:
    """Decode a registration message into reference values expiring `VALIDITY_MONTHS` after `now`."""
    if len(message) > MAX_MESSAGE_BYTES:
        raise RvpsError(f"registration message is larger than {MAX_MESSAGE_BYTES} bytes")
    try:
        doc = strict_loads(message)
    except JsonError as exc:
        raise RvpsError(f"registration message: {exc}") from None
    if not isinstance(doc, dict):
        raise RvpsError("registration message must be a JSON object")
    version = doc.get("version", MESSAGE_VERSION)  # upstream defaults a missing version
    if version != MESSAGE_VERSION:
        got = str(version)[:40]
        raise RvpsError(f"registration message version must be {MESSAGE_VERSION!r}, got {got!r}")
    kind, payload = doc.get("type"), doc.get("payload")
    if not isinstance(kind, str) or not isinstance(payload, str):
        raise RvpsError("registration message needs string fields 'type' and 'payload'")
    if kind in _UNSUPPORTED_TYPES:
        raise RvpsError(f"provenance type {kind!r} is not supported here (only 'sample')")
    if kind != "sample":
        raise RvpsError(f"no extractor for provenance type {kind[:40]!r} (only 'sample')")
    return _extract_sample(payload, _add_months(now, VALIDITY_MONTHS))


def _extract_sample(payload: str, expiration: datetime) -> list[ReferenceValue]:
    """`sample` provenance: base64 (standard alphabet, padded) of a JSON object name -> value."""
    try:
        raw = base64.b64decode(payload.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise RvpsError(f"sample payload is not standard base64: {exc}") from None
    try:
        values = strict_loads(raw)
    except JsonError as exc:
        raise RvpsError(f"sample payload: {exc}") from None
    if not isinstance(values, dict):
        raise RvpsError("sample payload must be a JSON object of name -> reference value")
    extracted = [
        ReferenceValue(name=name, value=value, expiration=expiration) for name, value in values.items()
    ]
    _encode({value.name: value for value in extracted})  # refused here, before anything is merged
    return extracted


def _encode(values: Mapping[str, ReferenceValue]) -> bytes:
    """The store's file content for `values` (records by name, sorted). Raises RvpsError for a value
    that cannot be stored: a lone UTF-16 surrogate is no Unicode text, so it has no UTF-8 form."""
    records = {name: value.to_record() for name, value in sorted(values.items())}
    try:
        return json.dumps(records, indent=2, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        raise RvpsError("a reference value holds a lone UTF-16 surrogate (not Unicode text)") from None
    except ValueError as exc:  # NaN or an infinity
        raise RvpsError(f"reference values cannot be stored: {exc}") from None


class ReferenceValueStore:
    """Thread-safe name -> reference value map, optionally persisted to `path` (a JSON object of records)."""

    def __init__(self, path: Path | None = None, clock: Clock = utc_now) -> None:
        self._path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._values: dict[str, ReferenceValue] = {}
        self._stamp: sharedfile.Stamp | None = None
        if path is not None:
            self._refresh(path)

    def _refresh(self, path: Path) -> None:
        """Re-read the file if it changed since it was last read (call with `_lock` held or alone)."""
        try:
            if self._stamp is not None and sharedfile.stamp(path) == self._stamp:
                return
            self._stamp, text = sharedfile.read(path)
        except FileNotFoundError:
            self._values, self._stamp = {}, None
            return
        except OSError as exc:
            raise RvpsError(f"cannot read reference value store {path}: {exc.strerror}") from None
        try:
            doc = strict_loads(text)
        except JsonError as exc:
            raise RvpsError(f"reference value store {path}: {exc}") from None
        if not isinstance(doc, dict):
            raise RvpsError(f"reference value store {path} must hold a JSON object")
        values = [ReferenceValue.from_record(record) for record in doc.values()]
        self._values = {value.name: value for value in values}

    def _save(self, path: Path, values: dict[str, ReferenceValue]) -> None:
        """Write `values` as the whole store; they become this replica's only once written."""
        data = _encode(values)
        try:
            sharedfile.replace(path, data)
            self._stamp = sharedfile.stamp(path)
        except OSError as exc:
            raise RvpsError(f"cannot write reference value store {path}: {exc.strerror}") from None
        self._values = values

    def register(self, message: str | bytes) -> list[str]:
        """Store every value the message carries (replacing same-named ones); returns their names.
        All or nothing: a value that cannot be stored leaves the store, and this replica's view of
        it, as they were."""
        values = parse_message(message, self._clock())
        with self._lock:
            if self._path is None:
                merged = {**self._values, **{value.name: value for value in values}}
                _encode(merged)  # what a file-backed store would refuse, this one refuses too
                self._values = merged
            else:
                try:
                    with sharedfile.locked(self._path):  # other replicas write the same file
                        self._refresh(self._path)
                        self._save(self._path, {**self._values, **{value.name: value for value in values}})
                except OSError as exc:
                    raise RvpsError(
                        f"cannot lock reference value store {self._path}: {exc.strerror}"
                    ) from None
        return [value.name for value in values]

    def record(self, name: str) -> dict[str, Any] | None:
        """Upstream's stored record of `name` (expired or not), for a store kept elsewhere (the
        KBS's key-value storage)."""
        with self._lock:
            value = self._values.get(name)
        return None if value is None else value.to_record()

    def install(self, records: Mapping[str, Any]) -> None:
        """Replace every value with `records` (name -> upstream record), as read from a store kept
        elsewhere; all or nothing."""
        values = {name: ReferenceValue.from_record(record) for name, record in records.items()}
        with self._lock:
            self._values = values

    def refresh(self) -> None:
        """Re-read the file if another replica changed it (one stat when it did not)."""
        if self._path is not None:
            with self._lock:
                self._refresh(self._path)

    def query(self, name: str, *, refresh: bool = True) -> Any | None:
        """The value registered under `name`, or None when there is none or it has expired.
        `refresh=False` answers from the values as last read: for the many queries of one appraisal,
        after one `refresh`."""
        if refresh:
            self.refresh()
        with self._lock:
            value = self._values.get(name)
        if value is None or value.expired(self._clock()):
            return None
        return value.value
