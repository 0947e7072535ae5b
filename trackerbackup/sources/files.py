"""Files and directories as one streamed tar archive (the selective type; storage builds on it).

Members keep numeric owners, modes (setgid directories included), symlinks as links and
mtimes (PAX format: sub-second times, long names; headers from `tarheader.py`). Member
names are the absolute host path without its leading '/', like GNU tar, so a restore
knows where each file belongs. The backup directory is never archived, even when it lies
inside a configured path (`walk.py`). Sockets, FIFOs and device nodes are not archived
(their programs recreate them, and a restore refuses them): they are skipped and named in
the manifest's warnings.

A file is opened without following links or blocking (O_NOFOLLOW | O_NONBLOCK) and must
still be a regular file once open; it is archived with the size it had when opened. One
that shrinks while read would leave zeros in its member, so the run fails (nothing is
recorded, earlier backups stay); one that grows or changes in place is archived as read
and named in the warnings.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import IO

from trackerbackup.config import Config, TypeSettings
from trackerbackup.errors import BackupFailed
from trackerbackup.log import Event, fields, get_logger, printable
from trackerbackup.repository import PartialBackup
from trackerbackup.safefs import describe_type
from trackerbackup.sources import Plan, SourceResult, tarheader
from trackerbackup.sources.walk import Entry, FileSet, member_name, open_entry
from trackerbackup.stream import CHUNK, SUFFIX, Writable

__all__ = ["FileSet", "FilesSource", "TarWriter", "estimate_bytes", "member_name", "resolve"]

log = get_logger()
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
NS = 1_000_000_000
# A restore refuses them (extract_rules.py), so a backup holding one could not be restored.
SPECIAL_REASON = "its program recreates it; a restore refuses special files"


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
    return sum(e.st.st_size + 512 for e in files.walk() if stat.S_ISREG(e.st.st_mode))


class _ExactReader:
    """Reads exactly `size` bytes of an open file. One that has fewer now fails the run
    (its member would hold zeros), unless `pad`: then the rest is zeros, counted in
    `padded` (GNU tar's choice; the storage type's logs may be truncated by logrotate)."""

    def __init__(self, fd: int, size: int, path: str, pad: bool = False) -> None:
        self._fd = fd
        self._size = size
        self._left = size
        self._path = path
        self._pad = pad
        self.padded = 0

    def read(self, n: int = CHUNK) -> bytes:
        n = min(n if n >= 0 else self._left, self._left)
        if n <= 0:
            return b""
        data = os.read(self._fd, n)
        while data and len(data) < n:  # a short read is not the end: ask for the rest
            more = os.read(self._fd, n - len(data))
            if not more:
                break
            data += more
        if len(data) < n and self._pad:
            self.padded += n - len(data)
            data += bytes(n - len(data))
        if len(data) < n:
            self._left -= len(data)
            raise BackupFailed(
                f"a file shrank while it was read (from {self._size:,} "
                f"to {self._size - self._left:,} bytes): its copy would be padded with zeros",
                op="archive files", path=printable(self._path),
                hint="run the backup again; if the file is truncated regularly (a log), "
                "exclude it")
        self._left -= len(data)
        return data


@dataclass
class _Opened:
    fd: int
    st: os.stat_result


class TarWriter:
    """Adds entries to a streamed tar archive, member by member, with flat memory. The
    headers are `tarheader.header`'s (what tarfile's PAX format writes, without its
    per-member cost and its list of every member written)."""

    def __init__(self, out: Writable, *, pad_shrunk: bool = False) -> None:
        self._pad_shrunk = pad_shrunk
        self._out = _Buffered(out)
        self._written = 0
        self.members = 0
        self.warnings: list[str] = []
        # (st_dev, st_ino) -> member name of files with more than one link: the second and
        # later names are stored as hard links to the first (memory grows only with them).
        self._linked: dict[tuple[int, int], str] = {}

    def add(self, entry: Entry) -> None:
        if stat.S_ISREG(entry.st.st_mode) and self._add_hard_link(entry):
            return
        if stat.S_ISREG(entry.st.st_mode):
            opened = self._open(entry)
            if opened is None:
                return
            if isinstance(opened, _Opened):
                self._add_regular(entry, opened)
                self.members += 1
                return
            entry = opened  # no longer a regular file: archived as what it is now
        special = _special(entry.st.st_mode)
        if special:
            self.warnings.append(f"{special} skipped ({SPECIAL_REASON}): "
                                 f"{printable(entry.path)}")
            return
        if stat.S_ISDIR(entry.st.st_mode):
            self._write(self._header(entry, tarheader.DIRTYPE))
        elif stat.S_ISLNK(entry.st.st_mode):
            target = os.readlink(entry.name, dir_fd=entry.parent_fd)
            self._write(self._header(entry, tarheader.SYMTYPE, linkname=target))
        else:
            self.warnings.append(f"unknown kind of file skipped: {printable(entry.path)}")
            return
        self.members += 1

    def _add_hard_link(self, entry: Entry) -> bool:
        if entry.st.st_nlink < 2:
            return False
        key = (entry.st.st_dev, entry.st.st_ino)
        first = self._linked.get(key)
        if first is None:
            self._linked[key] = member_name(entry.path)
            return False
        self._write(self._header(entry, tarheader.LNKTYPE, linkname=first))
        self.members += 1
        return True

    def _open(self, entry: Entry) -> _Opened | Entry | None:
        """The open regular file, or the entry as it is now if it was swapped meanwhile
        (None if it vanished)."""
        fd = open_entry(entry, FILE_FLAGS, "file")
        if fd is None:
            return self._swapped(entry)
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            return _Opened(fd, st)
        os.close(fd)
        return self._swapped(entry)

    def _swapped(self, entry: Entry) -> Entry | None:
        try:
            now = os.lstat(entry.name, dir_fd=entry.parent_fd)
        except FileNotFoundError:
            self.warnings.append(f"vanished while read: {printable(entry.path)}")
            return None
        self.warnings.append(f"changed while read (now {describe_type(now.st_mode)}): "
                             f"{printable(entry.path)}")
        return Entry(entry.path, entry.parent_fd, entry.name, now)

    def _add_regular(self, entry: Entry, opened: _Opened) -> None:
        before = opened.st
        try:
            opened_entry = Entry(entry.path, entry.parent_fd, entry.name, before)
            reader = _ExactReader(opened.fd, before.st_size, entry.path, self._pad_shrunk)
            self._write(self._header(opened_entry, tarheader.REGTYPE, size=before.st_size))
            self._copy(reader, before.st_size)
            after = os.fstat(opened.fd)
        finally:
            os.close(opened.fd)
        if reader.padded:
            self.warnings.append(f"shrank while read, its last {reader.padded:,} bytes "
                                 f"archived as zeros: {printable(entry.path)}")
        elif after.st_size > before.st_size:
            self.warnings.append(f"grew while read, archived its first {before.st_size:,} "
                                 f"bytes: {printable(entry.path)}")
        elif (after.st_mtime_ns, after.st_ctime_ns) != (before.st_mtime_ns, before.st_ctime_ns):
            self.warnings.append(f"changed while read, archived as read: "
                                 f"{printable(entry.path)}")

    def _header(self, entry: Entry, typeflag: bytes, *, size: int = 0,
                linkname: str = "") -> bytes:
        """The member header for `entry` from its stat: numeric owners with their names,
        the mode's permission bits, the mtime (sub-second when it has a fraction)."""
        st = entry.st
        mtime = st.st_mtime if st.st_mtime_ns % NS else st.st_mtime_ns // NS
        return tarheader.header(member_name(entry.path), typeflag, stat.S_IMODE(st.st_mode),
                                st.st_uid, st.st_gid, size, mtime, linkname,
                                _user(st.st_uid), _group(st.st_gid))

    def add_substitute(self, entry: Entry, content: IO[bytes], size: int) -> None:
        """A regular-file member named, owned, moded and dated like `entry` whose bytes
        come from `content` (a database's snapshot instead of the live file)."""
        self._write(self._header(entry, tarheader.REGTYPE, size=size))
        self._copy(content, size)
        self.members += 1

    def add_stream(self, name: str, mode: int, size: int, content: IO[bytes]) -> None:
        """A regular file of `size` bytes from `content`, owned by root, dated now."""
        self._write(tarheader.header(name, tarheader.REGTYPE, mode, 0, 0, size,
                                     int(time.time()), "", _user(0), _group(0)))
        self._copy(content, size)
        self.members += 1

    def _copy(self, content: IO[bytes] | _ExactReader, size: int) -> None:
        """Exactly `size` bytes of `content`, then the padding to whole blocks."""
        left = size
        while left:
            data = content.read(min(CHUNK, left))
            if not data:
                raise OSError("unexpected end of data")  # as tarfile: content shorter than said
            self._write(data)
            left -= len(data)
        self._write(tarheader.padding(size))

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self._written += len(data)

    def close(self) -> None:
        """The end-of-archive blocks, the last record completed, everything flushed."""
        end = self._written + 2 * tarheader.BLOCK
        self._write(bytes(2 * tarheader.BLOCK + -end % tarheader.RECORD))
        self._out.flush()


class _Buffered:
    """What the tar writer writes (headers of 512 bytes to a few KiB, file data in
    CHUNKs), passed on in writes of at least CHUNK bytes."""

    def __init__(self, out: Writable) -> None:
        self._out = out
        self._pending = bytearray()

    def write(self, data: bytes) -> int:
        if len(data) >= CHUNK:
            self.flush()
            self._out.write(data)
        else:
            self._pending += data
            if len(self._pending) >= CHUNK:
                self.flush()
        return len(data)

    def flush(self) -> None:
        if self._pending:
            self._out.write(bytes(self._pending))
            self._pending.clear()


def _special(mode: int) -> str:
    """The kind of a file that is never archived, or ""."""
    for test, kind in ((stat.S_ISSOCK, "socket"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return kind
    return ""


@cache
def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


@cache
def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


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
        notes: list[str] = []
        with backup.artifact(name, self.settings.compression, self.settings.compression_level,
                             plan.estimated_bytes) as out:
            tar = TarWriter(out)
            for entry in self.files.walk(notes):
                tar.add(entry)
            tar.close()
        if tar.members == 0:
            raise BackupFailed("none of the configured paths exists", op="archive files",
                               hint=f"check [{backup.type}] paths in the configuration")
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
            warnings=plan.warnings + tuple(notes) + tuple(tar.warnings),
        )
