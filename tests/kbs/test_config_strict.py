"""The `kbs` configuration is strict and reads upstream's storage keys (issue 12, strict configuration).

An unknown key is an error naming it, its table and the closest known key; all are reported at once.
Upstream's `session_storage_type` and resource `storage_backend_type` are read, mapped to the stores
this KBS has, and values it does not have are clear errors.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from kbs.admin import AdminAuth, AuthorizationMode
from kbs.config import AWS_BY_TAG, AWS_SECRETS_MANAGER, KVSTORAGE, KbsConfigError, load_config, parse_config

BASE = "[http_server]\ninsecure_http = true\n"


def local_fs(directory: Path) -> str:
    return '[storage_backend]\nstorage_type = "LocalFs"\n' + local_fs_dir(directory)


def local_fs_dir(directory: Path) -> str:
    return f'[storage_backend.backends.local_fs]\ndir_path = "{directory}"\n'


def test_every_unknown_key_is_named_with_the_closest_known_key() -> None:
    text = (
        "[http_server]\ninsecure_htpp = true\nworker_cont = 1\n"
        '[storage_backend]\nstorage_typ = "Memory"\n'
        '[[plugins]]\nname = "resource"\nstorage_backend_typ = "kvstorage"\n'
        '[admin]\nauthorisation_mode = "DenyAll"\n'
        "[attestation_tokn]\n"
    )
    with pytest.raises(KbsConfigError) as caught:
        parse_config(text)
    assert str(caught.value).splitlines() == [
        "configuration: http_server.insecure_htpp: unknown key (did you mean 'insecure_http'?)",
        "configuration: http_server.worker_cont: unknown key (did you mean 'worker_count'?)",
        "configuration: storage_backend.storage_typ: unknown key (did you mean 'storage_type'?)",
        "configuration: plugins[0].storage_backend_typ: unknown key (did you mean 'storage_backend_type'?)",
        "configuration: admin.authorisation_mode: unknown key (did you mean 'authorization_mode'?)",
        "configuration: attestation_tokn: unknown key (did you mean 'attestation_token'?)",
    ]


def test_unknown_keys_deep_in_admin_are_found() -> None:
    text = BASE + (
        '[admin]\nauthorization_mode = "AuthenticatedAuthorization"\n'
        "[admin.authentication.bearer_jwt]\n"
        'identity_providers = [{ issuer = "x", public_key_url = "/k.pem" }]\n'
    )
    with pytest.raises(KbsConfigError, match=r"identity_providers\[0\]\.public_key_url: unknown key"):
        parse_config(text)


def test_upstream_tls_keys_are_known_but_only_what_this_kbs_does_is_accepted() -> None:
    assert parse_config(BASE + 'tls_profile = "intermediate"\n').http.insecure_http
    with pytest.raises(KbsConfigError, match="tls_profile 'modern' is not available here"):
        parse_config(BASE + 'tls_profile = "modern"\n')
    with pytest.raises(KbsConfigError, match="tls_min_version is not available here"):
        parse_config(BASE + 'tls_min_version = "1.3"\n')


@pytest.mark.parametrize(
    ("session_type", "expected"),
    [
        (None, "LocalFs"),
        ('"LocalFs"', "LocalFs"),
        ('"local_fs"', "LocalFs"),
        ('"Memory"', "Memory"),
        ('"memory"', "Memory"),
        ('"Redis"', "Redis"),
        ('"postgres"', "Postgres"),
        ('"LocalJson"', "LocalJson"),
    ],
)
def test_session_storage_type_overrides_where_sessions_live(
    tmp_path: Path, session_type: str | None, expected: str
) -> None:
    top = f"session_storage_type = {session_type}\n" if session_type else ""
    extra = (
        f'[storage_backend.backends.local_json]\nfile_dir_path = "{tmp_path}"\n'
        if expected == "LocalJson"
        else ""
    )
    config = parse_config(top + BASE + local_fs(tmp_path) + extra)
    assert config.storage_dir == tmp_path
    assert (config.storage.type, config.storage.session_type) == ("LocalFs", expected)
    assert config.storage.type_of("kbs_protocol_session") == expected


def test_upstream_postgres_and_redis_settings_are_read(tmp_path: Path) -> None:
    text = (
        BASE
        + '[storage_backend]\nstorage_type = "Postgres"\n'
        + '[storage_backend.backends.postgres]\ndb = "trustee"\nusername = "kbs"\npassword = "pw"\n'
        + 'host = "db.example"\nport = 6432\n'
        + '[storage_backend.backends.redis]\nurl = "redis://cache:6379"\n'
    )
    config = parse_config(text)
    assert config.storage.type == config.storage.session_type == "Postgres"
    assert config.storage.postgres == {
        "db": "trustee",
        "username": "kbs",
        "password": "pw",
        "host": "db.example",
        "port": 6432,
    }
    assert config.storage.redis == {"url": "redis://cache:6379"}
    assert config.storage_dir is None
    with pytest.raises(KbsConfigError, match=r"postgres\.port must be a int"):
        parse_config(BASE + '[storage_backend.backends.postgres]\nport = "5432"\n')


def test_sessions_in_local_fs_with_everything_else_in_memory(tmp_path: Path) -> None:
    text = (
        'session_storage_type = "LocalFs"\n'
        + BASE
        + f'[storage_backend.backends.local_fs]\ndir_path = "{tmp_path}"\n'
    )
    config = parse_config(text)
    assert config.storage_dir is None
    assert (config.storage.type, config.storage.session_type, config.storage.local_fs) == (
        "Memory",
        "LocalFs",
        tmp_path,
    )
    with pytest.raises(KbsConfigError, match=r"needs storage_backend\.backends\.local_fs\.dir_path"):
        parse_config('session_storage_type = "LocalFs"\n' + BASE)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('session_storage_type = "Disk"\n' + BASE, "session_storage_type 'Disk' is not one of LocalFs,"),
        (BASE + '[storage_backend]\nstorage_type = "LocalJson"\n', "LocalJson needs storage_backend"),
        (
            'session_storage_type = "Memory"\n[http_server]\ninsecure_http = true\nworker_count = 2\n',
            "needs storage_type LocalFs, LocalJson, Postgres or Redis",
        ),
    ],
)
def test_bad_storage_types_are_clear_errors(text: str, message: str) -> None:
    with pytest.raises(KbsConfigError, match=message):
        parse_config(text)


@pytest.mark.parametrize(
    ("plugin", "backend"),
    [
        ("", KVSTORAGE),
        ('storage_backend_type = "KvStorage"', KVSTORAGE),
        ('storage_backend_type = "kvstorage"', KVSTORAGE),
        ('storage_backend_type = "Aws"\nregion = "eu-west-1"', AWS_BY_TAG),
        ('type = "AwsSecretsManager"', AWS_SECRETS_MANAGER),
        ('type = "kvstorage"\nstorage_backend_type = "kvstorage"', KVSTORAGE),
    ],
)
def test_resource_storage_backend_type_is_read(plugin: str, backend: str) -> None:
    config = parse_config(BASE + f'[[plugins]]\nname = "resource"\n{plugin}\n')
    assert config.resource_backend == backend


@pytest.mark.parametrize(
    ("plugin", "message"),
    [
        (
            'storage_backend_type = "Vault"',
            "storage_backend_type 'Vault' is upstream's but not available here",
        ),
        ('storage_backend_type = "Floppy"', "storage_backend_type 'Floppy' is not KvStorage, Aws or"),
        ('type = "kvstorage"\nstorage_backend_type = "Aws"', "disagree"),
    ],
)
def test_resource_backends_this_kbs_lacks_are_clear_errors(plugin: str, message: str) -> None:
    with pytest.raises(KbsConfigError, match=message):
        parse_config(BASE + f'[[plugins]]\nname = "resource"\n{plugin}\n')


def test_falling_back_to_deny_all_is_said_once_at_start(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="kbs.admin"):
        assert AdminAuth.from_config({}).mode is AuthorizationMode.DENY_ALL
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "DenyAll" in warnings[0], warnings
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kbs.admin"):
        AdminAuth.from_config({"authorization_mode": "DenyAll"})  # asked for by name: nothing to say
    assert not caplog.records


def test_each_problem_line_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "kbs-config.toml"
    path.write_text(BASE + "insecure_htpp = true\n[admn]\n")
    with pytest.raises(KbsConfigError) as caught:
        load_config(path)
    assert [line.split(": ", 1)[0] for line in str(caught.value).splitlines()] == [str(path)] * 2
