"""An archive staged as a tree, a frame and cuts rebuilds byte for byte, and refuses to
rebuild from a tree that differs from the archive."""

from __future__ import annotations

import hashlib
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.unit.test_extract import backup, make_source
from trackerbackup import offsite_tree
from trackerbackup.errors import BackupFailed, EnvironmentProblem
from trackerbackup.manifest import ArtifactRecord, Manifest, write_manifest
from trackerbackup.offsite_tree import CUTS, FRAME, TREE, rebuild, staged
from trackerbackup.stream import open_raw


def stored_backup(tmp_path: Path, source: Path) -> tuple[Path, Manifest]:
    directory = tmp_path / "backup"
    directory.mkdir()
    info = backup(source, directory / "files.tar.zst")
    artifact = ArtifactRecord(**info.to_manifest())
    now = datetime.now(UTC)
    manifest = Manifest(type="selective", id="20260101T000000.000000Z", started=now,
                        finished=now, tool_version="t", host="h", verified=True,
                        artifacts=(artifact,), source={"kind": "files"})
    write_manifest(directory, manifest)
    return directory, manifest


def raw_archive(directory: Path, manifest: Manifest) -> bytes:
    [artifact] = manifest.artifacts
    with open_raw(directory / artifact.name, artifact.compression) as raw:
        return raw.read()


@pytest.fixture
def archived(tmp_path: Path) -> tuple[Path, Manifest]:
    source = make_source(tmp_path / "src")
    big = source / "big.bin"
    big.write_bytes(os.urandom(3 << 20))  # content across many of tarfile's reads
    return stored_backup(tmp_path, source)


def test_the_staging_rebuilds_the_archive_exactly_and_is_removed_afterwards(
        tmp_path: Path, archived: tuple[Path, Manifest]) -> None:
    directory, manifest = archived
    staging = tmp_path / "staging" / "selective"
    staging.mkdir(parents=True)
    (staging / "leftover of a killed push").write_bytes(b"x")
    rebuilt = bytearray()
    with staged(directory, manifest, staging) as stage:
        assert sorted(p.name for p in stage.iterdir()) == sorted(
            ["manifest.toml", TREE, "files.tar.zst" + FRAME, "files.tar.zst" + CUTS])
        assert (stage / TREE / str(tmp_path / "src/big.bin").lstrip("/")).stat().st_size == \
            3 << 20
        done = rebuild(stage, "files.tar.zst", rebuilt.extend)
        frame = (stage / ("files.tar.zst" + FRAME)).stat().st_size
    original = raw_archive(directory, manifest)
    assert bytes(rebuilt) == original
    assert (done.size, done.sha256) == (len(original), hashlib.sha256(original).hexdigest())
    assert frame < len(original) - (3 << 20)  # the contents are not in the frame
    assert not staging.exists()


def test_a_changed_file_or_a_symlink_in_the_tree_is_refused(
        tmp_path: Path, archived: tuple[Path, Manifest]) -> None:
    directory, manifest = archived
    with staged(directory, manifest, tmp_path / "staging") as stage:
        copy = tmp_path / "copy"
        shutil.copytree(stage, copy, symlinks=True)
    big = copy / TREE / str(tmp_path / "src/big.bin").lstrip("/")
    original = raw_archive(directory, manifest)
    with big.open("r+b") as handle:  # same size, one byte flipped
        handle.seek(100)
        handle.write(bytes([handle.read(1)[0] ^ 1]))
    assert rebuild(copy, "files.tar.zst", lambda chunk: None).sha256 != \
        hashlib.sha256(original).hexdigest()
    big.unlink()
    outside = tmp_path / "outside"
    outside.write_bytes(b"y" * (3 << 20))
    big.symlink_to(outside)  # same size through a link: never followed
    with pytest.raises(BackupFailed, match=r"big\.bin"):
        rebuild(copy, "files.tar.zst", lambda chunk: None)
    big.unlink()
    big.write_bytes(b"short")
    with pytest.raises(BackupFailed, match="another size"):
        rebuild(copy, "files.tar.zst", lambda chunk: None)


def test_an_archive_that_differs_from_its_manifest_is_not_staged(
        tmp_path: Path, archived: tuple[Path, Manifest]) -> None:
    directory, manifest = archived
    [artifact] = manifest.artifacts
    wrong = Manifest(**{**manifest.__dict__, "artifacts": (
        ArtifactRecord(**{**artifact.__dict__, "raw_sha256": "0" * 64}),)})
    with pytest.raises(BackupFailed, match="the manifest says"), \
            staged(directory, wrong, tmp_path / "staging"):
        pass
    assert not (tmp_path / "staging").exists()


def test_a_staging_that_would_fill_the_disk_is_refused_before_it_writes(
        tmp_path: Path, archived: tuple[Path, Manifest],
        monkeypatch: pytest.MonkeyPatch) -> None:
    directory, manifest = archived
    [artifact] = manifest.artifacts
    free = artifact.raw_size + offsite_tree.STAGING_HEAD_ROOM - 1
    monkeypatch.setattr(shutil, "disk_usage",
                        lambda path: SimpleNamespace(total=free * 2, used=free, free=free))
    staging = tmp_path / "staging" / "selective"

    with pytest.raises(EnvironmentProblem) as caught, staged(directory, manifest, staging):
        pass

    assert f"staging backup {manifest.id} for its push needs about" in str(caught.value)
    assert "general.backup_dir" in (caught.value.hint or "")
    assert caught.value.exit_code == 3
    assert not staging.exists()
