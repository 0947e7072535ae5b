"""Tar archives built member by member (hostile ones included), and snapshots of a tree
to prove what an extraction did and did not touch."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from trackerbackup.stream import ArtifactWriter

MTIME = 1_700_000_000


@dataclass(frozen=True)
class Entry:
    name: str
    kind: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    linkname: str = ""
    uid: int = 0
    gid: int = 0


def file(name: str, data: bytes = b"x", mode: int = 0o644) -> Entry:
    return Entry(name, tarfile.REGTYPE, data, mode)


def directory(name: str, mode: int = 0o755) -> Entry:
    return Entry(name, tarfile.DIRTYPE, mode=mode)


def symlink(name: str, value: str) -> Entry:
    return Entry(name, tarfile.SYMTYPE, mode=0o777, linkname=value)


def hardlink(name: str, to: str) -> Entry:
    return Entry(name, tarfile.LNKTYPE, linkname=to)


def write_archive(path: Path, entries: list[Entry], compression: str = "none") -> Path:
    """A PAX archive through trackerbackup's own artifact writer, as a backup stores it."""
    with ArtifactWriter(path, compression) as out, \
            tarfile.open(fileobj=cast(IO[bytes], out), mode="w|",
                         format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.type = entry.kind
            info.mode = entry.mode
            info.uid, info.gid = entry.uid, entry.gid
            info.mtime = MTIME
            info.linkname = entry.linkname
            if entry.kind == tarfile.CHRTYPE:
                info.devmajor, info.devminor = 1, 3
            info.size = len(entry.data) if entry.kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(entry.data) if info.size else None)
    return path


@dataclass(frozen=True)
class Seen:
    """One path as lstat and its content or link value show it."""

    kind: int
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    content: str  # sha256 of a file, the value of a symlink, "" otherwise


def snapshot(root: Path, *, skip: Path | None = None) -> dict[str, Seen]:
    """Every path under `root` (itself included), never following a symlink; `skip` and
    what lies under it are left out. Directory mtimes are left out for the parent of
    `skip` only (creating the target there changes it)."""
    seen: dict[str, Seen] = {}
    for top, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if Path(top, d) != skip]
        for name in (".", *dirs, *files):
            path = Path(top, name) if name != "." else Path(top)
            relative = str(path.relative_to(root))
            if relative not in seen:
                seen[relative] = describe(path, ignore_mtime=skip is not None
                                          and path == skip.parent)
    return seen


def describe(path: Path, *, ignore_mtime: bool = False) -> Seen:
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        content = os.readlink(path)
    elif stat.S_ISREG(info.st_mode):
        content = hashlib.sha256(path.read_bytes()).hexdigest()
    else:
        content = ""
    return Seen(stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), info.st_uid,
                info.st_gid, 0 if ignore_mtime else info.st_mtime_ns, content)
