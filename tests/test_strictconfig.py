"""protocols.strictconfig: unknown keys are named with the closest known key, all at once."""

from __future__ import annotations

import pytest

from protocols.strictconfig import ArrayOf, ConfigProblem, StrictConfigError, Table, check_keys

SCHEMA = Table(
    {
        "http_server": Table({"sockets": None, "insecure_http": None}),
        "plugins": ArrayOf(Table({"name": None, "type": None})),
        "verifiers": Table(other=Table({"enabled": None})),
        "extra": Table(open=True),
    }
)


def test_known_keys_pass() -> None:
    check_keys(
        {
            "http_server": {"sockets": [], "insecure_http": True},
            "plugins": [{"name": "resource"}],
            "verifiers": {"snp": {"enabled": True}},
            "extra": {"anything": {"at": "all"}},
        },
        SCHEMA,
    )


def test_every_unknown_key_is_named_with_its_table_and_closest_key() -> None:
    doc = {
        "http_server": {"insecure_htpp": True},
        "plugins": [{"name": "resource", "typ": "kvstorage"}],
        "verifiers": {"snp": {"enbled": True}},
        "zzz": 1,
    }
    with pytest.raises(StrictConfigError) as caught:
        check_keys(doc, SCHEMA, "kbs-config.toml")
    assert caught.value.problems == (
        ConfigProblem("http_server", "insecure_htpp", "unknown key", "insecure_http"),
        ConfigProblem("plugins[0]", "typ", "unknown key", "type"),
        ConfigProblem("verifiers.snp", "enbled", "unknown key", "enabled"),
        ConfigProblem("", "zzz", "unknown key", None),
    )
    lines = str(caught.value).splitlines()
    assert (
        lines[0] == "kbs-config.toml: http_server.insecure_htpp: unknown key (did you mean 'insecure_http'?)"
    )
    assert lines[3] == "kbs-config.toml: zzz: unknown key"


def test_a_value_where_a_table_belongs_is_a_problem() -> None:
    with pytest.raises(StrictConfigError) as caught:
        check_keys({"http_server": "x", "plugins": {"name": "resource"}}, SCHEMA)
    assert [p.reason for p in caught.value.problems] == ["must be a table", "must be an array of tables"]


def test_control_characters_in_a_key_are_escaped() -> None:
    with pytest.raises(StrictConfigError) as caught:
        check_keys({"bad\nkey": 1}, SCHEMA)
    assert "\n" not in str(caught.value)
