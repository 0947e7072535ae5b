"""Files and directories as one streamed tar archive (the selective type; storage builds on it).

Members keep numeric owners, modes (setgid directories included), symlinks as links and
mtimes (PAX format: sub-second times, long names). Member names are the absolute host
path without its leading '/', like GNU tar, so a restore knows where each file belongs.
The backup directory is never archived, even when it lies inside a configured path.
"""

from __future__ import annotations

import fnmatch
import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from trackerbackup.config import Config, TypeSettings
from trackerbackup.errors import BackupFailed, EnvironmentProblem
from trackerbackup.log import Event, fields, get_logger
from trackerbackup.repository import PartialBackup
from trackerbackup.sources import Plan, SourceResult
from trackerbackup.stream import CHUNK, SUFFIX, Writable

log = get_logger()


def member_name(path: Path) -> str:
    return str(path).lstrip("/")


@dataclass(frozen=True)
class FileSet:
    """Resolved roots to archive, with the paths that must be left out."""

    roots: tuple[Path, ...]
    missing: tuple[Path, ...]
    exclude_patterns: tuple[str, ...]
    exclude_dirs: tuple[Path, ...]

    def excluded(self, path: Path) -> bool:
        if any(path == d or d in path.parents for d in self.exclude_dirs):
            return True
        name = member_name(path)
        return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(path.name, p)
                   for p in self.exclude_patterns)

    def walk(self) -> Iterator[Path]:
        """Every path to archive, parents before children; unreadable dirs raise."""
        for root in self.roots:
            yield from self._walk_one(root)

    def _walk_one(self, root: Path) -> Iterator[Path]:
        if self.excluded(root):
            return
        yield root
        if root.is_symlink() or not root.is_dir():
            return
        try:
            children = sorted(os.scandir(root), key=lambda e: e.name)
        except PermissionError as error:
            raise EnvironmentProblem(f"directory not readable: {error.strerror}",
                                     op="archive files", path=str(root),
                                     hint="run as root, or exclude it") from error
        for child in children:
            yield from self._walk_one(Path(child.path))


def resolve(config: Config, settings: TypeSettings, paths: tuple[str, ...]) -> FileSet:
    base = config.general.compose_dir
    roots: list[Path] = []
    missing: list[Path] = []
    for entry in paths:
        path = Path(os.path.normpath(base / entry))
        if os.path.lexists(path):
            roots.append(path)
        else:
            missing.append(path)
    return FileSet(
        roots=tuple(_drop_nested(roots)),
        missing=tuple(missing),
        exclude_patterns=settings.exclude,
        exclude_dirs=(config.general.backup_dir,),
    )


def _drop_nested(roots: list[Path]) -> list[Path]:
    """A root inside another root would be archived twice: keep the outer one."""
    unique = sorted(set(roots), key=lambda p: len(p.parts))
    kept: list[Path] = []
    for root in unique:
        if not any(k in root.parents for k in kept):
            kept.append(root)
    return sorted(kept)


def estimate_bytes(files: FileSet) -> int:
    total = 0
    for path in files.walk():
        st = path.lstat()
        if stat.S_ISREG(st.st_mode):
            total += st.st_size + 512
    return total


class _ExactReader:
    """Reads exactly `size` bytes of an open file: a file that shrank while being read is
    padded with zeros (and reported), one that grew is cut at its size when it was opened."""

    def __init__(self, handle: IO[bytes], size: int) -> None:
        self._handle = handle
        self._left = size
        self.short = False

    def read(self, n: int = CHUNK) -> bytes:
        n = min(n if n >= 0 else self._left, self._left)
        if n <= 0:
            return b""
        data = self._handle.read(n)
        if len(data) < n and not data:
            self.short = True
            data = bytes(n)
        self._left -= len(data)
        return data


class TarWriter:
    """Adds paths to a streamed tar archive, member by member, with flat memory."""

    def __init__(self, out: Writable) -> None:
        self._tar = tarfile.open(fileobj=cast(IO[bytes], out), mode="w|", format=tarfile.PAX_FORMAT,  # noqa: SIM115
                                 bufsize=CHUNK)
        self.members = 0
        self.changed: list[str] = []

    def add(self, path: Path) -> None:
        name = member_name(path)
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode):
            info = self._tar.gettarinfo(str(path), arcname=name)
            self._tar.addfile(info)
        else:
            self.add_file(path, name)
        self.members += 1

    def add_file(self, path: Path, name: str, display: str | None = None) -> None:
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed below
        except PermissionError as error:
            raise EnvironmentProblem(f"file not readable: {error.strerror}",
                                     op="archive files", path=str(path),
                                     hint="run as root, or exclude it") from error
        with handle:
            info = self._tar.gettarinfo(fileobj=handle, arcname=name)
            reader = _ExactReader(handle, info.size)
            self._tar.addfile(info, cast(IO[bytes], reader))
            if reader.short:
                self.changed.append(display or str(path))

    def add_stream(self, info: tarfile.TarInfo, reader: Any) -> None:
        self._tar.addfile(info, reader)
        self.members += 1

    def close(self) -> None:
        self._tar.close()


class FilesSource:
    """The selective type: configured paths, relative to general.compose_dir."""

    artifact_stem = "files.tar"

    def __init__(self, config: Config, settings: TypeSettings) -> None:
        self.config = config
        self.settings = settings
        self.files = resolve(config, settings, settings.paths)

    def plan(self) -> Plan:
        warnings = tuple(f"configured path does not exist: {p}" for p in self.files.missing)
        return Plan(
            items=tuple(str(p) for p in self.files.roots),
            estimated_bytes=estimate_bytes(self.files),
            warnings=warnings,
            details={"missing": [str(p) for p in self.files.missing]},
        )

    def write(self, backup: PartialBackup, plan: Plan) -> SourceResult:
        for path in self.files.missing:
            log.warning("configured path does not exist, skipped: %s", path,
                        extra=fields(Event.PATH_MISSING, type=backup.type, path=path))
        name = self.artifact_stem + SUFFIX[self.settings.compression]
        with backup.artifact(name, self.settings.compression, self.settings.compression_level,
                             plan.estimated_bytes) as out:
            tar = TarWriter(out)
            for path in self.files.walk():
                tar.add(path)
            tar.close()
        if tar.members == 0:
            raise BackupFailed("none of the configured paths exists", op="archive files",
                               hint=f"check [{backup.type}] paths in the configuration")
        warnings = plan.warnings + tuple(f"file changed while read: {p}" for p in tar.changed)
        return SourceResult(
            details={
                "source": {
                    "kind": "files",
                    "included": list(plan.items),
                    "missing": plan.details.get("missing", []),
                    "excluded_patterns": list(self.settings.exclude),
                    "members": tar.members,
                },
            },
            warnings=warnings,
        )
