"""The cloud-config user data format shared by the adaptor (render) and process-user-data (parse)."""

from __future__ import annotations

import contextlib

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.cloudconfig import (
    ALLOWED_WRITE_FILES,
    APF_CONFIG_PATH,
    SCRATCH_SPACE_MARKER_PATH,
    CloudConfigError,
    WriteFile,
    parse_cloud_config,
    render_cloud_config,
)

SECRET = "-----BEGIN PRIVATE KEY-----\nTOPSECRETKEYMATERIAL\n-----END PRIVATE KEY-----\n"


def test_render_matches_upstream_template_shape() -> None:
    # What upstream's Go template produces for the same two entries.
    rendered = render_cloud_config([WriteFile("/123", "Hello\n"), WriteFile("/456", "Hello\nWorld\n")])
    assert rendered == (
        "#cloud-config\n"
        "\n"
        "write_files:\n"
        "  - path: /123\n"
        "    content: |\n"
        "      Hello\n"
        "  - path: /456\n"
        "    content: |\n"
        "      Hello\n"
        "      World\n"
    )


def test_empty_content_omits_key_and_round_trips() -> None:
    files = [WriteFile(APF_CONFIG_PATH, '{"a": 1}\n'), WriteFile(SCRATCH_SPACE_MARKER_PATH, "")]
    rendered = render_cloud_config(files)
    assert rendered.endswith(f"  - path: {SCRATCH_SPACE_MARKER_PATH}\n")
    assert parse_cloud_config(rendered) == files


def test_no_files_renders_header_only() -> None:
    assert render_cloud_config([]) == "#cloud-config\n"
    assert parse_cloud_config("#cloud-config\n") == []


def test_allow_list_is_upstreams() -> None:
    assert {
        "/run/peerpod/aa.toml",
        "/run/peerpod/cdh.toml",
        "/run/peerpod/apf.json",
        "/run/peerpod/auth.json",
        "/run/peerpod/initdata",
        "/run/peerpod/scratch-space.marker",
    } == ALLOWED_WRITE_FILES


@pytest.mark.parametrize(
    "content",
    ["a", "a\n", "a\n\n", "\n", "\n\n\n", " lead\n", "\tTab\n", "\n  x", "x \n", "a\r\nb", "\x00", "\u2028"],
)
def test_round_trip_edge_content(content: str) -> None:
    files = [WriteFile("/run/peerpod/apf.json", content)]
    assert parse_cloud_config(render_cloud_config(files)) == files


def test_trailing_newline_variants_use_chomping_indicators() -> None:
    assert "content: |-\n" in render_cloud_config([WriteFile("/x", "no newline")])
    assert "content: |+\n" in render_cloud_config([WriteFile("/x", "two\n\n")])
    assert "content: |2\n" in render_cloud_config([WriteFile("/x", "  indented\n")])


def test_unusual_paths_are_quoted_and_round_trip() -> None:
    files = [WriteFile("relative: path", "x\n"), WriteFile("null", "y\n"), WriteFile("/a #b", "")]
    assert parse_cloud_config(render_cloud_config(files)) == files


def test_parse_accepts_bytes_and_missing_content() -> None:
    doc = b"#cloud-config\nwrite_files:\n- path: /run/peerpod/initdata\n"
    assert parse_cloud_config(doc) == [WriteFile("/run/peerpod/initdata", "")]


def test_parse_null_write_files_is_empty() -> None:
    assert parse_cloud_config("write_files:\n") == []
    assert parse_cloud_config("") == []


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("write_files: [\n", "not valid YAML"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("runcmd: [ls]\n", "unknown key 'runcmd'"),
        ("write_files:\n  - path: /x\n    owner: root\n", "unknown key 'owner'"),
        ("write_files:\n  - content: hi\n", "has no path"),
        ("write_files:\n  - path: ''\n", "path is empty"),
        ("write_files:\n  - path: /x\n    content: 644\n", "content must be a string"),
        ("write_files:\n  - path: /x\n    content:\n", "content must be a string"),
        ("write_files:\n  - path: [a]\n", "path must be a string"),
        ("write_files: /x\n", "write_files must be a list"),
        ("write_files:\n  - /x\n", "write_files[0] must be a mapping"),
        ("write_files: []\nwrite_files: []\n", "duplicate key 'write_files'"),
        ("write_files:\n  - path: /x\n    path: /y\n", "duplicate key 'path'"),
        ("write_files:\n  - path: !!binary aGk=\n", "path must be a string"),
        ("write_files:\n  - path: !custom /x\n", "path must be a string"),
        ("a: 1\n---\nb: 2\n", "not valid YAML"),
        ("? [a]\n: b\n", "must be a string"),
    ],
)
def test_malformed_cloud_config_errors(doc: str, message: str) -> None:
    with pytest.raises(CloudConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_cloud_config(doc)


def test_not_utf8_is_cloud_config_error() -> None:
    with pytest.raises(CloudConfigError, match="not UTF-8"):
        parse_cloud_config(b"write_files: \xff\n")


def test_deep_nesting_is_cloud_config_error() -> None:
    with pytest.raises(CloudConfigError):
        parse_cloud_config("[" * 5000 + "]" * 5000)


def test_errors_do_not_quote_the_document() -> None:
    doc = "write_files:\n  - path: /run/peerpod/apf.json\n    content: " + SECRET.replace("\n", " ") + ": {\n"
    with pytest.raises(CloudConfigError) as info:
        parse_cloud_config(doc)
    assert "TOPSECRET" not in str(info.value)


def test_render_rejects_lone_surrogates() -> None:
    with pytest.raises(CloudConfigError, match="surrogate"):
        render_cloud_config([WriteFile("/x", "\ud800")])


_paths = st.text(min_size=1).filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s))
_tricky = st.text(alphabet=" \t\n\r-:#|>'\"\\\x85\u2028\ufeffaZ")
_contents = st.one_of(st.text(), _tricky).filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.builds(WriteFile, _paths, _contents), max_size=4))
def test_round_trip_property(files: list[WriteFile]) -> None:
    rendered = render_cloud_config(files)
    assert parse_cloud_config(rendered) == files
    # libyaml (the C parser Go's yaml.v2 is ported from) reads it back the same.
    loaded = yaml.load(rendered, Loader=yaml.CSafeLoader) or {}
    got = [WriteFile(e["path"], e.get("content", "")) for e in loaded.get("write_files") or []]
    assert got == files


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_only_raise_cloud_config_error(blob: bytes) -> None:
    with contextlib.suppress(CloudConfigError):
        parse_cloud_config(blob)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="write_files:path content-[]{}!&*|>\n '\"#?,", max_size=200))
def test_random_yamlish_text_only_raises_cloud_config_error(text: str) -> None:
    try:
        files = parse_cloud_config(text)
    except CloudConfigError:
        return
    assert all(isinstance(f.path, str) and f.path and isinstance(f.content, str) for f in files)
