"""Manifests are read strictly: what this version writes (and what 0.1.0 wrote) reads
back; anything else is refused with its reason, never a crash or a verified backup."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from trackerbackup.errors import TrackerBackupError
from trackerbackup.manifest import (
    MANIFEST,
    MAX_MANIFEST_BYTES,
    Manifest,
    read_manifest,
    render_manifest,
)

BACKUP_ID = "20261126T103942.176226Z"
SHA = "694117ef04ce03ee2745a4f299b32eedc96fbdc7b6aab8686ec6fb6bbe01d07f"
RAW_SHA = "09ecb6ebc8bcefc733f6f2ec44f791abeed6a99edf0cc31519637898aebd52d8"

# Byte for byte what trackerbackup 0.1.0 (main before the hardening) wrote.
WRITTEN_BY_0_1_0 = f"""format = 1
type = "selective"
id = "{BACKUP_ID}"
started = "2026-11-26T10:39:42.176347+00:00"
finished = "2026-11-26T10:39:42.182208+00:00"
tool_version = "0.1.0"
host = "vm"
verified = true
warnings = [
    "configured path does not exist: /opt/torrust/x",
]

[source]
kind = "files"
included = [
    "/opt/torrust/.env",
]
missing = []
excluded_patterns = []
members = 1

[[artifacts]]
name = "files.tar.zst"
size = 34
sha256 = "{SHA}"
raw_size = 100
raw_sha256 = "{RAW_SHA}"
compression = "zstd"
verification = "read back from disk: stored sha256 and decompressed sha256 match"
"""


def read(tmp_path: Path, text: str | bytes) -> Manifest:
    directory = tmp_path / BACKUP_ID
    directory.mkdir()
    (directory / MANIFEST).write_bytes(text.encode() if isinstance(text, str) else text)
    return read_manifest(directory)


def test_a_manifest_of_the_previous_version_reads_back(tmp_path: Path) -> None:
    manifest = read(tmp_path, WRITTEN_BY_0_1_0)
    assert manifest.verified is True
    assert manifest.started == datetime(2026, 11, 26, 10, 39, 42, 176347, tzinfo=UTC)
    assert manifest.size == 34
    assert [a.name for a in manifest.artifacts] == ["files.tar.zst"]
    assert manifest.warnings == ("configured path does not exist: /opt/torrust/x",)
    assert manifest.source["members"] == 1


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        ('started = "2026-11-26T10:39:42.176347+00:00"', "started = 2026-11-26T10:39:42Z",
         "started is a datetime, not a str"),
        ('started = "2026-11-26T10:39:42.176347+00:00"',
         'started = "2026-11-26T10:39:42.176347"', "started has no time zone"),
        ('finished = "2026-11-26T10:39:42.182208+00:00"', 'finished = "yesterday"',
         "finished is not an ISO 8601 time"),
        ("verified = true", 'verified = "false"', "verified is a str, not a bool"),
        ("verified = true", "verified = 1", "verified is a int, not a bool"),
        ('warnings = [\n    "configured path does not exist: /opt/torrust/x",\n]',
         "warnings = 3", "warnings is a int, not a list"),
        ("format = 1", "format = 2", "format 2 is not one this trackerbackup reads"),
        ("format = 1", 'format = "1"', "no integer 'format' key"),
        ('name = "files.tar.zst"', 'name = "../../etc/shadow"', "not a plain file name"),
        ('name = "files.tar.zst"', 'name = "manifest.toml"', "not a plain file name"),
        ('name = "files.tar.zst"', 'name = "verification.toml"', "not a plain file name"),
        ('name = "files.tar.zst"', 'name = ".partial-x"', "not a plain file name"),
        ('name = "files.tar.zst"', 'name = "a\\u0000b"', "not a plain file name"),
        ("size = 34", "size = -1", "artifacts.size is negative"),
        ("size = 34", 'size = "34"', "artifacts.size is a str, not a int"),
        ("size = 34", "size = true", "artifacts.size is a bool, not a int"),
        (f'sha256 = "{SHA}"', 'sha256 = "zz"', "artifacts.sha256 is not a sha256 hex digest"),
        ('compression = "zstd"', 'compression = "rar"', "unknown compression"),
        ("host = ", "artifacts = 5\nhost = ", "artifacts is a int, not a list"),
        ("[[artifacts]]", "[[artifacts]]\n[[artifacts]]", "artifacts.name is missing"),
        ("format = 1", "format = [", "not valid TOML"),
    ],
)
def test_a_malformed_manifest_is_refused_with_its_reason(tmp_path: Path, old: str, new: str,
                                                         reason: str) -> None:
    text = WRITTEN_BY_0_1_0.replace(old, new, 1)
    assert text != WRITTEN_BY_0_1_0
    if "artifacts = 5" in new:  # a key cannot be both a value and an array of tables
        text = text.split("[[artifacts]]")[0]
    with pytest.raises(TrackerBackupError, match=re.escape(reason)):
        read(tmp_path, text)


@pytest.mark.parametrize(("plant", "reason"), [
    (lambda path: os.mkfifo(path), "a FIFO, not a regular file"),
    (lambda path: path.symlink_to("/etc/passwd"), "cannot open: Too many levels of symbolic"),
    (lambda path: path.write_bytes(b"#" * (MAX_MANIFEST_BYTES + 1)), "larger than"),
    (lambda path: path.write_bytes(b'format = 1\nhost = "\xff"\n'), "not valid TOML"),
])
def test_a_manifest_that_is_not_a_small_utf8_file_is_refused_without_waiting(
    tmp_path: Path, plant: Callable[[Path], None], reason: str
) -> None:
    plant(tmp_path / MANIFEST)
    with pytest.raises(TrackerBackupError, match=re.escape(reason)):
        read_manifest(tmp_path)


def test_render_makes_file_names_that_are_not_utf8_printable(tmp_path: Path) -> None:
    name = b"/opt/torrust/storage/caf\xe9\x1b[2J.toml".decode("utf-8", "surrogateescape")
    manifest = replace(read(tmp_path, WRITTEN_BY_0_1_0),
                       warnings=(f"changed while read: {name}",))
    data = render_manifest(manifest)
    assert tomllib.loads(data.decode())["warnings"] == [
        "changed while read: /opt/torrust/storage/caf\\xe9\\x1b[2J.toml"]
