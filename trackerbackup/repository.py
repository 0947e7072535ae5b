"""The backup repository: layout, manifest, atomic commit, listing and deletion.

    <backup_dir>/<type>/<id>/manifest.toml     a committed backup (see docs/design.md)
    <backup_dir>/<type>/.partial-<id>/         a run in progress, or an interrupted one

A backup exists only once its directory carries its final name, and that rename happens
after every artifact and the manifest (written last) are fsynced. Anything hidden
(`.partial-*`, `.deleting-*`) is never listed; the next run of the type removes it.
"""

from __future__ import annotations

import os
import shutil
import socket
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import tomli_w

from trackerbackup import __version__
from trackerbackup.atomic import fsync_dir, write_atomically
from trackerbackup.errors import BackupFailed, EnvironmentProblem, TrackerBackupError
from trackerbackup.manifest import read_verification
from trackerbackup.stream import ArtifactInfo, ArtifactWriter, verify_artifact

MANIFEST = "manifest.toml"
PARTIAL_PREFIX = ".partial-"
DELETING_PREFIX = ".deleting-"
ID_FORMAT = "%Y%m%dT%H%M%S.%fZ"
FORMAT_VERSION = 1
ARTIFACT_CHECK = "read back from disk: stored sha256 and decompressed sha256 match"


def format_id(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(ID_FORMAT)


def parse_id(backup_id: str) -> datetime:
    return datetime.strptime(backup_id, ID_FORMAT).replace(tzinfo=UTC)


@dataclass(frozen=True)
class Backup:
    """A committed backup as read from its manifest."""

    type: str
    id: str
    path: Path
    started: datetime
    finished: datetime
    verified: bool
    size: int
    manifest: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "id": self.id,
            "path": str(self.path),
            "started": self.started.isoformat(),
            "finished": self.finished.isoformat(),
            "verified": self.verified,
            "size": self.size,
            "artifacts": [a["name"] for a in self.manifest.get("artifacts", [])],
            "warnings": self.manifest.get("warnings", []),
        }


def _failed_verify(path: Path) -> bool:
    """A backup whose newest `trackerbackup verify` failed no longer counts as verified."""
    try:
        record = read_verification(path)
    except TrackerBackupError:
        return True
    return record is not None and not record.ok


class Repository:
    def __init__(self, root: Path) -> None:
        self.root = root

    def type_dir(self, backup_type: str) -> Path:
        return self.root / backup_type

    def backups(self, backup_type: str) -> list[Backup]:
        """Committed backups of a type, newest first. Unreadable manifests are skipped."""
        directory = self.type_dir(backup_type)
        if not directory.is_dir():
            return []
        backups = []
        for entry in directory.iterdir():
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            backup = self._read(backup_type, entry)
            if backup is not None:
                backups.append(backup)
        return sorted(backups, key=lambda b: b.id, reverse=True)

    def _read(self, backup_type: str, path: Path) -> Backup | None:
        try:
            with open(path / MANIFEST, "rb") as handle:
                manifest = tomllib.load(handle)
            return Backup(
                type=backup_type,
                id=path.name,
                path=path,
                started=datetime.fromisoformat(manifest["started"]),
                finished=datetime.fromisoformat(manifest["finished"]),
                verified=manifest.get("verified") is True and not _failed_verify(path),
                size=sum(int(a["size"]) for a in manifest.get("artifacts", [])),
                manifest=manifest,
            )
        except (OSError, KeyError, ValueError, tomllib.TOMLDecodeError):
            return None

    def leftovers(self, backup_type: str) -> list[Path]:
        directory = self.type_dir(backup_type)
        if not directory.is_dir():
            return []
        return sorted(p for p in directory.iterdir()
                      if p.name.startswith((PARTIAL_PREFIX, DELETING_PREFIX)))

    def remove_leftovers(self, backup_type: str) -> list[Path]:
        """Remove what interrupted runs left. Call only while holding the type's lock."""
        removed = self.leftovers(backup_type)
        for path in removed:
            shutil.rmtree(path)
        return removed

    def delete(self, backup: Backup) -> None:
        # Rename first: a crash half-way through rmtree leaves a hidden directory, never
        # a listed backup with missing files.
        hidden = backup.path.with_name(DELETING_PREFIX + backup.id)
        os.rename(backup.path, hidden)
        fsync_dir(hidden.parent)
        shutil.rmtree(hidden)

    def new_id(self, backup_type: str, now: datetime | None = None) -> str:
        moment = now or datetime.now(UTC)
        taken = {p.name.removeprefix(PARTIAL_PREFIX) for p in self._entries(backup_type)}
        while format_id(moment) in taken:
            moment += timedelta(microseconds=1)
        return format_id(moment)

    def _entries(self, backup_type: str) -> list[Path]:
        directory = self.type_dir(backup_type)
        return list(directory.iterdir()) if directory.is_dir() else []

    @contextmanager
    def begin(self, backup_type: str) -> Iterator[PartialBackup]:
        """A partial backup; removed again unless `commit` was called."""
        directory = self.type_dir(backup_type)
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            directory.mkdir(mode=0o700, exist_ok=True)
        except OSError as error:
            raise EnvironmentProblem(
                f"cannot create the backup directory: {error.strerror}",
                op="prepare backup", path=str(directory),
                hint="check general.backup_dir: it must be writable by root",
            ) from error
        backup_id = self.new_id(backup_type)
        partial = PartialBackup(backup_type, backup_id, directory / (PARTIAL_PREFIX + backup_id))
        partial.path.mkdir(mode=0o700)
        try:
            yield partial
        finally:
            if not partial.committed:
                shutil.rmtree(partial.path, ignore_errors=True)


class PartialBackup:
    """A backup being written. Artifacts go in, `commit` publishes it atomically."""

    def __init__(self, backup_type: str, backup_id: str, path: Path) -> None:
        self.type = backup_type
        self.id = backup_id
        self.path = path
        self.started = datetime.now(UTC)
        self.artifacts: list[ArtifactInfo] = []
        self.committed = False

    @property
    def final_path(self) -> Path:
        return self.path.with_name(self.id)

    @contextmanager
    def artifact(self, name: str, compression: str, level: int,
                 expected_bytes: int | None = None) -> Iterator[ArtifactWriter]:
        """Write one artifact; it is recorded (and read back to verify) when the block ends."""
        writer = ArtifactWriter(self.path / name, compression, level, expected_bytes)
        with writer:
            yield writer
        assert writer.info is not None
        verify_artifact(writer.path, writer.info)
        self.artifacts.append(writer.info)

    def scratch(self, name: str) -> Path:
        """A path for an intermediate file that must not be part of the backup."""
        return self.path / f".scratch-{name}"

    def commit(self, details: dict[str, Any]) -> Path:
        """Write the manifest last, then rename the directory into place."""
        for leftover in self.path.glob(".scratch-*"):
            leftover.unlink()
        if not self.artifacts:
            raise BackupFailed("no artifact was written", op="commit backup",
                               path=str(self.path))
        manifest = {
            "format": FORMAT_VERSION,
            "type": self.type,
            "id": self.id,
            "started": self.started.isoformat(),
            "finished": datetime.now(UTC).isoformat(),
            "tool_version": __version__,
            "host": socket.gethostname(),
            "verified": True,
            **details,
            "artifacts": [{**a.to_manifest(), "verification": ARTIFACT_CHECK}
                          for a in self.artifacts],
        }
        write_atomically(self.path / MANIFEST, tomli_w.dumps(manifest).encode())
        os.rename(self.path, self.final_path)
        fsync_dir(self.path.parent)
        self.committed = True
        self.path = self.final_path
        return self.path
