"""Resource stores: files (atomic, crash-safe, path-safe) and AWS Secrets Manager (moto)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import boto3
import pytest
from botocore.config import Config
from moto import mock_aws

from kbs.store import (
    FileResourceStore,
    InvalidResourcePath,
    MemoryResourceStore,
    ResourceNotFound,
    ResourcePath,
    StoreError,
    ThreadedResourceStore,
)
from kbs.store.aws import SecretsManagerStore, TagSecretsStore
from tests.kbs.support import Guest, RunningKbs, start_kbs

PATH = ResourcePath("default", "key", "one")


@pytest.mark.parametrize(
    "parts",
    [
        ("default", "key"),
        ("default", "key", "one", "two"),
        ("..", "key", "one"),
        ("default", ".hidden", "one"),
        ("default", "key", ""),
        ("default", "k/ey", "one"),
        ("default", "ké", "one"),
        ("default", "key", "x" * 256),
        ("default", "key", "one\n"),
    ],
)
def test_invalid_resource_paths(parts: tuple[str, ...]) -> None:
    with pytest.raises(InvalidResourcePath, match="illegal ResourceDesc format"):
        ResourcePath.parse(parts)


def test_valid_resource_path() -> None:
    assert str(ResourcePath.parse(["my-repo", "License.v1", "key_2.pem"])) == "my-repo/License.v1/key_2.pem"


@pytest.mark.parametrize("kind", ["file", "memory"])
def test_round_trip(tmp_path: Path, kind: str) -> None:
    store = FileResourceStore(tmp_path / "repo") if kind == "file" else MemoryResourceStore()
    with pytest.raises(ResourceNotFound):
        store.get(PATH)
    store.put(PATH, b"first")
    store.put(PATH, b"second")
    assert store.get(PATH) == b"second"
    store.delete(PATH)
    with pytest.raises(ResourceNotFound):
        store.get(PATH)
    with pytest.raises(ResourceNotFound):
        store.delete(PATH)


def test_file_layout_and_modes(tmp_path: Path) -> None:
    store = FileResourceStore(tmp_path / "repo")
    store.put(PATH, b"secret")
    file = tmp_path / "repo" / "default" / "key" / "one"
    assert file.read_bytes() == b"secret"
    assert file.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in file.parent.iterdir()) == ["one"]  # no temporary left behind


def test_symlinks_are_not_followed(tmp_path: Path) -> None:
    store = FileResourceStore(tmp_path / "repo")
    outside = tmp_path / "outside"
    outside.write_bytes(b"host secret")
    (tmp_path / "repo" / "default" / "key").mkdir(parents=True)
    (tmp_path / "repo" / "default" / "key" / "one").symlink_to(outside)
    with pytest.raises(StoreError, match="symbolic link"):
        store.get(PATH)
    (tmp_path / "repo" / "evil").symlink_to(tmp_path)  # a repo directory pointing out of the root
    (tmp_path / "kbs").mkdir()
    (tmp_path / "kbs" / "x").write_bytes(b"outside")
    with pytest.raises(StoreError, match="symbolic link"):
        store.get(ResourcePath("evil", "kbs", "x"))
    with pytest.raises(StoreError, match="symbolic link"):
        store.put(ResourcePath("evil", "kbs", "x"), b"overwrite?")
    assert (tmp_path / "kbs" / "x").read_bytes() == b"outside"
    with pytest.raises(StoreError, match="symbolic link"):
        store.delete(ResourcePath("evil", "kbs", "x"))
    assert (tmp_path / "kbs" / "x").read_bytes() == b"outside"


def test_nothing_is_created_outside_the_root_through_a_symlinked_repository(tmp_path: Path) -> None:
    store = FileResourceStore(tmp_path / "repo")
    (tmp_path / "repo" / "evil").symlink_to(tmp_path)
    with pytest.raises(StoreError, match="symbolic link"):
        store.put(ResourcePath("evil", "created", "x"), b"data")
    assert not (tmp_path / "created").exists()  # checked before any mkdir, not after


def test_hard_links_fifos_and_directories_in_the_store_are_not_served(tmp_path: Path) -> None:
    store = FileResourceStore(tmp_path / "repo")
    store.put(PATH, b"resource")
    outside = tmp_path / "outside"
    outside.write_bytes(b"host secret")
    directory = tmp_path / "repo" / "default" / "key"
    os.link(outside, directory / "linked")
    with pytest.raises(StoreError, match="hard links"):
        store.get(ResourcePath("default", "key", "linked"))
    os.link(directory / "one", tmp_path / "second-name")  # the store's own file, linked from elsewhere
    with pytest.raises(StoreError, match="hard links"):
        store.get(PATH)
    os.mkfifo(directory / "fifo")  # must not wait for a writer
    (directory / "sub").mkdir()
    for name in ("fifo", "sub"):
        with pytest.raises(StoreError, match="not a regular file"):
            store.get(ResourcePath("default", "key", name))


@pytest.mark.parametrize("kind", ["file", "memory"])
def test_longest_names_are_stored(tmp_path: Path, kind: str) -> None:
    store = FileResourceStore(tmp_path / "repo") if kind == "file" else MemoryResourceStore()
    longest = ResourcePath.parse(["r" * 255, "t" * 255, "x" * 255])
    store.put(longest, b"long")
    store.put(longest, b"longer")
    assert store.get(longest) == b"longer"
    store.delete(longest)


async def test_longest_names_through_the_admin_api(tmp_path: Path) -> None:
    running = await start_kbs(tmp_path)
    try:
        name = "/".join(("r" * 255, "t" * 255, "x" * 255))
        async with aiohttp.ClientSession() as http:
            await running.put_resource(http, name, b"long name")
        assert await running.broker.store.get(ResourcePath.parse(name.split("/"))) == b"long name"
    finally:
        await running.runner.cleanup()


CRASHER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from kbs.store import FileResourceStore, ResourcePath
    store = FileResourceStore(Path(sys.argv[1]))
    crash_at = sys.argv[2]
    real_replace = os.replace
    def die(*args):
        os.kill(os.getpid(), signal.SIGKILL)
    if crash_at == "before-rename":
        os.fsync = die          # the data is written, the rename never happens
    else:
        def replace_then_die(*args, **kwargs):
            real_replace(*args, **kwargs)
            die()               # renamed; the directory fsync never happens
        os.replace = replace_then_die
    store.put(ResourcePath("default", "key", "one"), b"new" * 100000)
    """
)


@pytest.mark.parametrize(
    ("crash_at", "expected"), [("before-rename", b"old"), ("after-rename", b"new" * 100000)]
)
def test_a_crash_never_leaves_a_partial_resource(tmp_path: Path, crash_at: str, expected: bytes) -> None:
    root = tmp_path / "repo"
    FileResourceStore(root).put(PATH, b"old")
    result = subprocess.run([sys.executable, "-c", CRASHER, str(root), crash_at], check=False)
    assert result.returncode == -9
    store = FileResourceStore(root)
    assert store.get(PATH) == expected
    leftovers = [p for p in (root / "default" / "key").iterdir() if p.name != "one"]
    assert all(p.name.startswith(".tmp-") for p in leftovers)
    for leftover in leftovers:  # an old leftover is cleaned at the next start
        os.utime(leftover, (0, 0))
    FileResourceStore(root)
    assert sorted(p.name for p in (root / "default" / "key").iterdir()) == ["one"]


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield


def test_secrets_manager_store(aws: None) -> None:
    client = boto3.client("secretsmanager", region_name="eu-west-1")
    kms = boto3.client("kms", region_name="eu-west-1")
    key_id = kms.create_key(Description="kbs resources")["KeyMetadata"]["KeyId"]
    store = SecretsManagerStore(client, prefix="kbs/", kms_key_id=key_id)
    with pytest.raises(ResourceNotFound):
        store.get(PATH)
    store.put(PATH, b"\x00binary\xff")
    assert client.describe_secret(SecretId="kbs/default/key/one")["KmsKeyId"] == key_id
    store.put(PATH, b"replaced")
    assert store.get(PATH) == b"replaced"
    store.delete(PATH)
    with pytest.raises(ResourceNotFound):
        store.get(PATH)
    with pytest.raises(ResourceNotFound):
        store.delete(PATH)
    store.put(PATH, b"again")  # the name is free again at once
    assert store.get(PATH) == b"again"
    client.create_secret(Name="kbs/default/key/text", SecretString="plain text")
    assert store.get(ResourcePath("default", "key", "text")) == b"plain text"


def test_upstream_aws_backend_reads_the_tag_as_secret_id_and_is_read_only(aws: None) -> None:
    client = boto3.client("secretsmanager", region_name="eu-west-1")
    client.create_secret(Name="db-password", SecretString="hunter2")
    store = TagSecretsStore(client)
    assert store.get(ResourcePath("any", "thing", "db-password")) == b"hunter2"
    with pytest.raises(ResourceNotFound):
        store.get(ResourcePath("any", "thing", "missing"))
    with pytest.raises(StoreError, match="read-only"):
        store.put(PATH, b"x")
    with pytest.raises(StoreError, match="read-only"):
        store.delete(PATH)


def test_secrets_manager_errors_are_store_errors() -> None:
    unreachable = boto3.client(
        "secretsmanager",
        region_name="eu-west-1",
        endpoint_url="http://127.0.0.1:9",  # discard port: nothing listens
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 0}, connect_timeout=2),
    )
    store = SecretsManagerStore(unreachable)
    for call in (lambda: store.get(PATH), lambda: store.put(PATH, b"x"), lambda: store.delete(PATH)):
        with pytest.raises(StoreError, match="Secrets Manager"):
            call()


@pytest.fixture
async def aws_kbs(tmp_path: Path, aws: None) -> AsyncIterator[RunningKbs]:
    plugin = '[[plugins]]\nname = "resource"\ntype = "AwsSecretsManager"\nregion = "eu-west-1"\n'
    running = await start_kbs(tmp_path, plugin)
    async with aiohttp.ClientSession() as http:
        await running.set_policies(http)
        await running.put_resource(http, "default/key/one", b"from secrets manager")
    yield running
    await running.runner.cleanup()


async def test_kbs_serves_resources_from_secrets_manager(aws_kbs: RunningKbs) -> None:
    store = aws_kbs.broker.store
    assert isinstance(store, ThreadedResourceStore) and isinstance(store.store, SecretsManagerStore)
    async with Guest(aws_kbs.url) as guest:
        await guest.handshake()
        status, doc = await guest.resource("default/key/one")
        assert status == 200
        assert guest.decrypt_jwcrypto(doc) == b"from secrets manager"
