"""The backup repository: layout, atomic commit, listing and deletion.

    <backup_dir>/<type>/<id>/manifest.toml     a committed backup (see docs/design.md)
    <backup_dir>/<type>/.partial-<id>/         a run in progress, or an interrupted one

A backup exists only once its directory carries its final name, and that rename happens
after every artifact and the manifest (written last) are fsynced. Anything hidden
(`.partial-*`, `.deleting-*`) is never listed; the next run of the type removes it.

Nothing found in the repository is trusted: `backup_dir` and each type directory must be
real directories of this user that nobody else may write (a loose mode is tightened when
writing), entries are looked at with lstat and never followed, and an entry that is not a
backup this version understands is reported and left alone, never deleted.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from trackerbackup import __version__
from trackerbackup.atomic import fsync_dir, write_atomically
from trackerbackup.errors import BackupFailed, TrackerBackupError
from trackerbackup.log import fields, get_logger
from trackerbackup.manifest import (
    MANIFEST,
    MAX_MANIFEST_BYTES,
    ArtifactRecord,
    Manifest,
    ManifestError,
    is_plain_name,
    parse_manifest,
    read_manifest,
    read_verification,
    render_manifest,
)
from trackerbackup.safefs import (
    PRIVATE_DIR_MODE,
    check_ancestors,
    describe_type,
    disk_problem,
    private_dir,
)
from trackerbackup.stream import ArtifactInfo, ArtifactWriter, verify_artifact

PARTIAL_PREFIX = ".partial-"
DELETING_PREFIX = ".deleting-"
ID_FORMAT = "%Y%m%dT%H%M%S.%fZ"
_ID = re.compile(r"\d{8}T\d{6}\.\d{6}Z")
ARTIFACT_CHECK = "read back from disk: stored sha256 and decompressed sha256 match"
FIX_BACKUP_DIR = "point general.backup_dir at a directory of root's, mode 0700"
MAX_WARNINGS = 1000  # in the manifest; every warning is in the journal

log = get_logger()


def format_id(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(ID_FORMAT)


def parse_id(backup_id: str) -> datetime:
    if not _ID.fullmatch(backup_id):
        raise ValueError(f"not a backup id: {backup_id!r}")
    return datetime.strptime(backup_id, ID_FORMAT).replace(tzinfo=UTC)


@dataclass(frozen=True)
class Backup:
    """A committed backup: its manifest, and whether it still counts as verified. It does
    not when the run did not record it so, when an artifact is missing or has another
    size than recorded, or when its newest `trackerbackup verify` failed (`problems`)."""

    path: Path
    manifest: Manifest
    verified: bool
    problems: tuple[str, ...] = ()

    @property
    def type(self) -> str:
        return self.manifest.type

    @property
    def id(self) -> str:
        return self.manifest.id

    @property
    def started(self) -> datetime:
        return self.manifest.started

    @property
    def finished(self) -> datetime:
        return self.manifest.finished

    @property
    def size(self) -> int:
        return self.manifest.size

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.manifest.warnings

    def summary(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "id": self.id,
            "path": str(self.path),
            "started": self.started.isoformat(),
            "finished": self.finished.isoformat(),
            "verified": self.verified,
            "size": self.size,
            "artifacts": [a.name for a in self.manifest.artifacts],
            "warnings": list(self.warnings),
            "problems": list(self.problems),
        }


@dataclass(frozen=True)
class Ignored:
    """An entry of a type directory that is not a backup: why it was left alone."""

    path: Path
    reason: str


class Repository:
    def __init__(self, root: Path) -> None:
        self.root = root

    def type_dir(self, backup_type: str) -> Path:
        return self.root / backup_type

    # -- safety of the directories -------------------------------------------------------

    def _open_type_dir(self, backup_type: str, *, write: bool) -> bool:
        """Check (and, to write, create or tighten) backup_dir and the type directory.
        False when they do not exist yet and `write` is false."""
        check_ancestors(self.root, "general.backup_dir")
        for path, what in ((self.root, "general.backup_dir"),
                           (self.type_dir(backup_type), f"the {backup_type} directory")):
            found = private_dir(path, create=write, what=what, fix=FIX_BACKUP_DIR)
            if not found.exists:
                return False
            if found.tightened_from is not None:
                log.warning("tightened the mode of %s from %04o to %04o: backups are for "
                            "root only", path, found.tightened_from, PRIVATE_DIR_MODE,
                            extra=fields(type=backup_type, path=path))
        return True

    def _entries(self, backup_type: str, *, write: bool = False) -> list[os.DirEntry[str]]:
        if not self._open_type_dir(backup_type, write=write):
            return []
        try:
            with os.scandir(self.type_dir(backup_type)) as entries:
                return sorted(entries, key=lambda e: e.name)
        except OSError as error:
            raise disk_problem(error, "list backups", self.type_dir(backup_type)) from error

    # -- listing -------------------------------------------------------------------------

    def backups(self, backup_type: str) -> list[Backup]:
        """Committed backups of a type, newest first."""
        return self.scan(backup_type)[0]

    def scan(self, backup_type: str) -> tuple[list[Backup], list[Ignored]]:
        """Committed backups of a type (newest first), and the entries that are not."""
        backups: list[Backup] = []
        ignored: list[Ignored] = []
        for entry in self._entries(backup_type):
            if entry.name.startswith("."):
                continue
            found = self._read(backup_type, entry)
            if isinstance(found, Backup):
                backups.append(found)
            else:
                ignored.append(Ignored(Path(entry.path), found))
        return sorted(backups, key=lambda b: b.id, reverse=True), ignored

    def _read(self, backup_type: str, entry: os.DirEntry[str]) -> Backup | str:
        """The backup in `entry`, or why it is not one."""
        try:
            if entry.is_symlink() or not entry.is_dir(follow_symlinks=False):
                return f"{describe_type(entry.stat(follow_symlinks=False).st_mode)}, not a backup"
        except OSError as error:
            return f"cannot be looked at: {error.strerror}"
        try:
            parse_id(entry.name)
        except ValueError:
            return "not a backup id"
        path = Path(entry.path)
        try:
            record = read_manifest(path)
        except TrackerBackupError as error:  # ManifestError, UnknownFormat
            if isinstance(error.__cause__, FileNotFoundError):
                return "no manifest: not a backup (an interrupted copy?)"
            return f"{MANIFEST} is unusable: {error.message}"
        for key, found in (("type", record.type), ("id", record.id)):
            if found != (backup_type if key == "type" else entry.name):
                return f"{MANIFEST} is unusable: its {key} is {found!r}, not its directory's"
        problems = (*_artifact_problems(path, record.artifacts), *_verify_problems(path))
        return Backup(path, record, verified=record.verified and not problems,
                      problems=problems)

    def leftovers(self, backup_type: str) -> list[Path]:
        return [Path(e.path) for e in self._entries(backup_type)
                if e.name.startswith((PARTIAL_PREFIX, DELETING_PREFIX))]

    # -- changes (only while holding the type's lock) ------------------------------------

    def remove_leftovers(self, backup_type: str) -> list[Path]:
        """Remove what interrupted runs left. Call only while holding the type's lock."""
        removed = []
        for entry in self._entries(backup_type, write=True):
            if entry.name.startswith((PARTIAL_PREFIX, DELETING_PREFIX)):
                _remove(Path(entry.path), "remove a leftover")
                removed.append(Path(entry.path))
        return removed

    def delete(self, backup: Backup) -> None:
        # Rename first: a crash half-way through rmtree leaves a hidden directory, never
        # a listed backup with missing files.
        hidden = backup.path.with_name(DELETING_PREFIX + backup.id)
        try:
            os.rename(backup.path, hidden)
            fsync_dir(hidden.parent)
        except OSError as error:
            raise disk_problem(error, "delete a backup", backup.path) from error
        _remove(hidden, "delete a backup")

    def new_id(self, backup_type: str, now: datetime | None = None) -> str:
        moment = now or datetime.now(UTC)
        taken = {e.name.removeprefix(PARTIAL_PREFIX) for e in self._entries(backup_type)}
        while format_id(moment) in taken:
            moment += timedelta(microseconds=1)
        return format_id(moment)

    @contextmanager
    def begin(self, backup_type: str) -> Iterator[PartialBackup]:
        """A partial backup; removed again unless `commit` was called."""
        self._open_type_dir(backup_type, write=True)
        backup_id = self.new_id(backup_type)
        path = self.type_dir(backup_type) / (PARTIAL_PREFIX + backup_id)
        try:
            os.mkdir(path, PRIVATE_DIR_MODE)
            os.chmod(path, PRIVATE_DIR_MODE)  # the umask must not decide
        except OSError as error:
            raise disk_problem(error, "start a backup", path) from error
        partial = PartialBackup(backup_type, backup_id, path)
        try:
            yield partial
        finally:
            if not partial.committed:
                shutil.rmtree(partial.path, ignore_errors=True)


def _verify_problems(path: Path) -> tuple[str, ...]:
    """A backup whose newest `trackerbackup verify` failed no longer counts as verified."""
    try:
        record = read_verification(path)
    except TrackerBackupError as error:
        return (f"its verification record is unreadable: {error.message}",)
    if record is not None and not record.ok:
        return (f"its last verification failed: {record.problem}",)
    return ()


def _artifact_problems(directory: Path,
                       artifacts: tuple[ArtifactRecord, ...]) -> Iterator[str]:
    for artifact in artifacts:
        try:
            info = os.lstat(directory / artifact.name)
        except FileNotFoundError:
            yield f"artifact {artifact.name} is missing"
            continue
        except OSError as error:
            yield f"artifact {artifact.name}: {error.strerror}"
            continue
        if not stat.S_ISREG(info.st_mode):
            yield f"artifact {artifact.name} is {describe_type(info.st_mode)}"
        elif info.st_size != artifact.size:
            yield (f"artifact {artifact.name} has {info.st_size:,} bytes, "
                   f"the manifest says {artifact.size:,}")


def _remove(path: Path, op: str) -> None:
    """Remove a directory tree or a single entry, never following a symlink."""
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path)  # fd-based on Linux: never follows a link inside
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as error:
        raise disk_problem(error, op, path) from error


class PartialBackup:
    """A backup being written. Artifacts go in, `commit` publishes it atomically."""

    def __init__(self, backup_type: str, backup_id: str, path: Path) -> None:
        self.type = backup_type
        self.id = backup_id
        self.path = path
        self.started = datetime.now(UTC)
        self._started_monotonic = time.monotonic()
        self.artifacts: list[ArtifactInfo] = []
        self.committed = False

    @property
    def final_path(self) -> Path:
        return self.path.with_name(self.id)

    @contextmanager
    def artifact(self, name: str, compression: str, level: int,
                 expected_bytes: int | None = None) -> Iterator[ArtifactWriter]:
        """Write one artifact; it is recorded (and read back to verify) when the block ends."""
        if not is_plain_name(name) or name == MANIFEST:
            raise ValueError(f"not an artifact name: {name!r}")
        writer = ArtifactWriter(self.path / name, compression, level, expected_bytes)
        with writer:
            yield writer
        assert writer.info is not None
        verify_artifact(writer.path, writer.info)
        self.artifacts.append(writer.info)

    def scratch(self, name: str) -> Path:
        """A path for an intermediate file that must not be part of the backup."""
        return self.path / f".scratch-{name}"

    def commit(self, details: dict[str, Any]) -> Backup:
        """Write the manifest last, then rename the directory into place. `details`:
        "source" (the source kind's record) and "warnings".

        Returns the backup as `Repository.backups` lists it: the manifest is parsed back
        with the same strict reader before it is written, so a backup this run commits is
        always one the next run can read."""
        for leftover in self.path.glob(".scratch-*"):
            leftover.unlink()
        if not self.artifacts:
            raise BackupFailed("no artifact was written", op="commit backup",
                               path=str(self.path))
        data = render_manifest(self._manifest(details))
        try:
            if len(data) > MAX_MANIFEST_BYTES:
                raise ManifestError(f"larger than {MAX_MANIFEST_BYTES:,} bytes")
            record = parse_manifest(tomllib.loads(data.decode()), self.path / MANIFEST)
        except TrackerBackupError as error:
            raise BackupFailed(f"the manifest would not read back: {error.message}",
                               op="commit backup", path=str(self.path)) from error
        try:
            write_atomically(self.path / MANIFEST, data)
            os.rename(self.path, self.final_path)
        except OSError as error:
            raise disk_problem(error, "commit backup", self.path) from error
        self.committed = True  # renamed: from here on it is a listed backup, never removed
        self.path = self.final_path
        try:
            fsync_dir(self.path.parent)
        except OSError as error:
            raise disk_problem(error, "commit backup (fsync)", self.path.parent) from error
        return Backup(self.path, record, verified=record.verified)

    def _manifest(self, details: dict[str, Any]) -> Manifest:
        unknown = set(details) - {"source", "warnings"}
        if unknown:
            raise ValueError(f"not manifest details: {sorted(unknown)}")
        warnings = tuple(details.get("warnings", ()))
        if len(warnings) > MAX_WARNINGS:
            warnings = (*warnings[:MAX_WARNINGS],
                        f"... and {len(warnings) - MAX_WARNINGS} more (see the journal)")
        # Measured, not read twice from a clock that may be stepped meanwhile: finished is
        # never before started.
        elapsed = timedelta(seconds=time.monotonic() - self._started_monotonic)
        return Manifest(
            type=self.type, id=self.id, started=self.started,
            finished=self.started + elapsed, tool_version=__version__,
            host=socket.gethostname(), verified=True,
            artifacts=tuple(ArtifactRecord(**a.to_manifest(), verification=ARTIFACT_CHECK)
                            for a in self.artifacts),
            source=dict(details.get("source", {})), warnings=warnings,
        )
