"""A reference value that cannot be stored is refused before it is merged (issue 12 item 4).

A lone UTF-16 surrogate has no UTF-8 form: merged in memory first, it failed the file write, left
the replica answering with a value never stored, and failed every later registration there.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from verifier.rvps import ReferenceValueStore, RvpsError, _extract_sample, utc_now

# JSON text for {"svn": "\ud800"}: decodes to a str holding a lone surrogate
POISON = json.dumps({"type": "sample", "payload": base64.b64encode(b'{"svn": "\\ud800"}').decode()})


def message(values: dict[str, object]) -> str:
    return json.dumps({"type": "sample", "payload": base64.b64encode(json.dumps(values).encode()).decode()})


@pytest.mark.parametrize("persisted", [True, False])
def test_an_unstorable_value_is_refused_and_later_registrations_work(tmp_path: Path, persisted: bool) -> None:
    path = tmp_path / "reference_values.json" if persisted else None
    store = ReferenceValueStore(path)
    store.register(message({"svn": ["1"]}))
    with pytest.raises(RvpsError):
        store.register(POISON)
    assert store.query("svn") == ["1"]  # what it held before, not the refused value
    assert store.register(message({"launch_digest": ["abcde"]})) == ["launch_digest"]
    if path is not None:
        assert ReferenceValueStore(path).query("svn") == ["1"]  # the file and memory agree
        assert json.loads(path.read_text())["launch_digest"]["value"] == ["abcde"]


def test_a_lone_surrogate_in_a_name_or_value_is_named_as_such() -> None:
    expiry = utc_now()
    for values in ({"svn": "\ud800"}, {"\udfff": 1}, {"svn": {"nested": ["\ud800"]}}):
        with pytest.raises(RvpsError, match="lone UTF-16 surrogate"):
            _extract_sample(base64.b64encode(json.dumps(values).encode()).decode(), expiry)
