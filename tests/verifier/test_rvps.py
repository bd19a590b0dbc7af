"""Reference values: upstream's registration message, query by name, expiry enforced, persistence."""

from __future__ import annotations

import base64
import contextlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from verifier.rvps import MAX_MESSAGE_BYTES, ReferenceValueStore, RvpsError, parse_message

NOW = datetime(2026, 2, 28, 12, 0, 0, tzinfo=UTC)


def message(values: object, *, kind: str = "sample", version: str | None = "0.1.0") -> str:
    doc: dict[str, object] = {"type": kind, "payload": base64.b64encode(json.dumps(values).encode()).decode()}
    if version is not None:
        doc["version"] = version
    return json.dumps(doc)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_register_then_query_lists_and_scalars() -> None:
    store = ReferenceValueStore(clock=Clock(NOW))
    names = store.register(message({"svn": ["1"], "major_version": 1, "launch_digest": ["abcde"]}))
    assert sorted(names) == ["launch_digest", "major_version", "svn"]
    assert store.query("svn") == ["1"]
    assert store.query("major_version") == 1
    assert store.query("unknown") is None


def test_register_replaces_same_name_and_keeps_others() -> None:
    store = ReferenceValueStore(clock=Clock(NOW))
    store.register(message({"svn": ["1"], "keep": True}))
    store.register(message({"svn": ["2"]}))
    assert store.query("svn") == ["2"]
    assert store.query("keep") is True


def test_missing_version_defaults_like_upstream() -> None:
    store = ReferenceValueStore(clock=Clock(NOW))
    store.register(message({"a": 1}, version=None))
    assert store.query("a") == 1


def test_expiry_is_twelve_months_and_enforced_on_query() -> None:
    clock = Clock(NOW)
    store = ReferenceValueStore(clock=clock)
    store.register(message({"svn": ["1"]}))
    (value,) = parse_message(message({"svn": ["1"]}), NOW)
    # 2026-02-28 + 12 months; microseconds dropped as upstream does.
    assert value.expiration == datetime(2027, 2, 28, 12, 0, 0, tzinfo=UTC)
    assert value.to_record()["expiration"] == "2027-02-28T12:00:00Z"
    clock.now = value.expiration
    assert store.query("svn") == ["1"]
    clock.now = value.expiration + timedelta(seconds=1)
    assert store.query("svn") is None


def test_leap_day_expiry_clamps_to_month_end() -> None:
    (value,) = parse_message(message({"x": 1}), datetime(2028, 2, 29, tzinfo=UTC))
    assert value.expiration == datetime(2029, 2, 28, tzinfo=UTC)


def test_persistence_round_trip_in_upstream_record_format(tmp_path: Path) -> None:
    path = tmp_path / "rv.json"
    store = ReferenceValueStore(path, clock=Clock(NOW))
    store.register(message({"snp_launch_measurement": ["aa" * 48]}))
    records = json.loads(path.read_text())
    assert records == {
        "snp_launch_measurement": {
            "version": "0.1.0",
            "name": "snp_launch_measurement",
            "expiration": "2027-02-28T12:00:00Z",
            "value": ["aa" * 48],
        }
    }
    reopened = ReferenceValueStore(path, clock=Clock(NOW))
    assert reopened.query("snp_launch_measurement") == ["aa" * 48]


def test_stores_sharing_a_file_see_and_keep_each_others_values(tmp_path: Path) -> None:
    """Replicas share the file: each query sees the latest registrations, and a registration
    through one store keeps what another registered meanwhile."""
    path = tmp_path / "rv.json"
    first, second = ReferenceValueStore(path, clock=Clock(NOW)), ReferenceValueStore(path, clock=Clock(NOW))
    assert second.query("a") is None
    first.register(message({"a": [1]}))
    assert second.query("a") == [1]
    second.register(message({"b": [2]}))
    first.register(message({"a": [3]}))
    assert (second.query("a"), second.query("b")) == ([3], [2])
    assert (first.query("a"), first.query("b")) == ([3], [2])


def test_expired_record_in_store_file_reads_as_absent(tmp_path: Path) -> None:
    path = tmp_path / "rv.json"
    record = {"version": "0.1.0", "name": "old", "expiration": "2020-01-01T00:00:00Z", "value": [1]}
    path.write_text(json.dumps({"old": record}))
    assert ReferenceValueStore(path, clock=Clock(NOW)).query("old") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (message({"a": 1}, version="0.2.0"), "version must be '0.1.0'"),
        (message({"a": 1}, kind="swid"), "'swid' is not supported"),
        (message({"a": 1}, kind="nope"), "no extractor for provenance type 'nope'"),
        (message(["a"]), "must be a JSON object of name -> reference value"),
        (json.dumps({"version": "0.1.0", "type": "sample", "payload": "not base64!"}), "not standard base64"),
        (
            json.dumps({"version": "0.1.0", "type": "sample", "payload": base64.b64encode(b"{").decode()}),
            "not JSON",
        ),
        (json.dumps({"version": "0.1.0", "type": "sample"}), "'type' and 'payload'"),
        ("[]", "must be a JSON object"),
        ('{"version": NaN}', "NaN is not valid JSON"),
        ("[" * 100_000, "nested too deeply"),
        ('{"version": ' + "9" * 5000 + "}", "not usable JSON"),
        ("x" * (MAX_MESSAGE_BYTES + 1), "larger than"),
    ],
)
def test_bad_messages_are_rejected_with_a_reason(text: str, expected: str) -> None:
    store = ReferenceValueStore(clock=Clock(NOW))
    with pytest.raises(RvpsError, match=expected):
        store.register(text)


def test_corrupt_store_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "rv.json"
    path.write_text('{"a": {"name": "a", "expiration": "yesterday", "value": 1}}')
    with pytest.raises(RvpsError, match="is not YYYY-MM-DDTHH:MM:SSZ"):
        ReferenceValueStore(path)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


@given(st.binary(max_size=300) | st.text(max_size=300))
def test_random_messages_raise_only_rvps_error(data: bytes | str) -> None:
    with contextlib.suppress(RvpsError):
        parse_message(data, NOW)


@given(
    st.dictionaries(st.sampled_from(["version", "type", "payload", "x"]), json_values, max_size=4),
    st.binary(max_size=100),
)
def test_random_message_shapes_raise_only_rvps_error(doc: dict[str, object], payload: bytes) -> None:
    for candidate in (doc, {**doc, "type": "sample", "payload": base64.b64encode(payload).decode()}):
        with contextlib.suppress(RvpsError):
            parse_message(json.dumps(candidate), NOW)


@given(json_values)
def test_any_json_payload_object_registers_or_fails_cleanly(values: object) -> None:
    try:
        parsed = parse_message(message(values), NOW)
    except RvpsError:
        assert not isinstance(values, dict)
    else:
        assert isinstance(values, dict)
        assert {value.name: value.value for value in parsed} == values
