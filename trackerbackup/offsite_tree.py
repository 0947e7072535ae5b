"""Archive backups (`files`, `storage`) pushed off-site as files, and rebuilt byte for byte.

A tar stream pushed with --stdin costs restic a whole chunk (~1 MB) per changed small
file; a tree of files costs it the changed files. So an archive is staged as a tree in
a directory whose path never changes (restic finds the previous snapshot by host and
path), pushed with one `restic backup DIR`, and the staging is removed:

    <backup_dir>/.offsite-staging/<type>/
      manifest.toml         the backup's manifest, as it is
      tree/                 the archive extracted by trackerbackup/extract.py
      <artifact>.frame      the raw tar stream with every file's content cut out
      <artifact>.cuts       JSON lines, one per cut in archive order: {"gap", "size",
                            "path"}: `gap` frame bytes come before the cut (relative, so
                            a file that grows changes only its own line)

`rebuild` puts the tar stream back together (frame bytes, and at each cut the file
`tree/<path>`'s content), in archive order, hashing it: before a push the staging is
rebuilt and must give the manifest's raw_sha256 and raw_size, so only a staging that
restores exactly is pushed; after `restic restore` the same rebuild (through no symlink)
gives the archive back, checked against the same sha256 before anything uses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from trackerbackup.errors import BackupFailed
from trackerbackup.extract import extract
from trackerbackup.extract_rules import BoundedTarInfo, split_name
from trackerbackup.manifest import MANIFEST, ArtifactRecord, Manifest
from trackerbackup.preflight import check_free_space
from trackerbackup.safefs import READ_NOFOLLOW
from trackerbackup.stream import CHUNK, open_raw

ARCHIVE_KINDS = ("files", "storage")
STAGING = ".offsite-staging"
TREE = "tree"
FRAME, CUTS = ".frame", ".cuts"
OP = "stage an archive for its off-site push"
# The staged tree takes the archive's raw size (plus file system overhead); a push that
# would fill the disk of the backups is refused before it writes, not half-way.
STAGING_HEAD_ROOM = 64 << 20
REBUILD = "rebuild an archive"


def is_archive(manifest: Manifest) -> bool:
    return manifest.kind in ARCHIVE_KINDS and len(manifest.artifacts) == 1


def staging_dir(backup_dir: Path, backup_type: str) -> Path:
    return Path(backup_dir) / STAGING / backup_type


@dataclass(frozen=True)
class Rebuilt:
    size: int
    sha256: str


def _remove(directory: Path) -> None:
    if directory.is_symlink():
        directory.unlink()
    elif directory.exists():
        shutil.rmtree(directory)


@contextmanager
def staged(backup_path: Path, manifest: Manifest, staging: Path) -> Iterator[Path]:
    """The backup staged in `staging` (a leftover of a killed push is replaced), removed
    on the way out; raises BackupFailed if the staging would not rebuild the archive."""
    [artifact] = manifest.artifacts
    archive = backup_path / artifact.name
    _remove(staging)
    check_free_space(staging.parent, artifact.raw_size, STAGING_HEAD_ROOM,
                     what=f"staging backup {manifest.id} for its push",
                     hint="free space in general.backup_dir (the staging is removed after "
                     "each push), lower retention, or push before the disk fills")
    staging.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.mkdir(staging, 0o700)
    try:
        setuid = manifest.source.get("setuid", [])
        report = extract(archive, artifact.compression, staging / TREE,
                         allowed_setuid=frozenset(str(p) for p in setuid)
                         if isinstance(setuid, list) else frozenset())
        _check(Rebuilt(report.raw_size, report.raw_sha256), artifact, "extracted")
        _write_frame(archive, artifact, staging)
        shutil.copy2(backup_path / MANIFEST, staging / MANIFEST)
        _check(rebuild(staging, artifact.name, lambda chunk: None), artifact, "rebuilt")
        yield staging
    finally:
        _remove(staging)


def _check(got: Rebuilt, artifact: ArtifactRecord, how: str) -> None:
    if (got.size, got.sha256) != (artifact.raw_size, artifact.raw_sha256):
        raise BackupFailed(f"{artifact.name} {how} has {got.size:,} bytes, sha256 "
                           f"{got.sha256[:16]}..., the manifest says {artifact.raw_size:,} and "
                           f"{artifact.raw_sha256[:16]}...", op=OP,
                           hint="the archive cannot be pushed as files; run 'trackerbackup "
                                "verify' on this backup")


class _Framer:
    """Reads the raw tar stream for tarfile and writes every byte that is not inside a cut
    (a regular file's content) to the frame. tarfile reads ahead, but never past a file's
    content before it has returned that file's header: a cut is always known before its
    first byte must be dropped."""

    def __init__(self, source: IO[bytes], frame: IO[bytes]) -> None:
        self._source = source
        self._frame = frame
        self._pending = bytearray()  # read, not yet known to be outside every cut
        self._pending_at = 0  # the stream offset of _pending[0]
        self._skip_until = 0
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self.digest.update(data)
        start, self.size = self.size, self.size + len(data)
        drop = max(0, min(self._skip_until - start, len(data)))
        if not self._pending:
            self._pending_at = start + drop
        self._pending += data[drop:]
        return data

    def cut(self, offset: int, size: int) -> None:
        keep = offset - self._pending_at
        if not 0 <= keep <= len(self._pending):
            raise BackupFailed(f"tar member content at offset {offset:,} out of order",
                               op=OP)
        self._frame.write(self._pending[:keep])
        end = offset + size
        del self._pending[:max(0, end - self._pending_at)]
        self._pending_at = max(self._pending_at, end)
        self._skip_until = end

    def finish(self) -> None:
        while self.read(CHUNK):
            pass
        self._frame.write(self._pending)
        self._pending.clear()


def _write_frame(archive: Path, artifact: ArtifactRecord, staging: Path) -> None:
    name = artifact.name
    with open_raw(archive, artifact.compression) as raw, \
            open(staging / (name + FRAME), "xb") as frame, \
            open(staging / (name + CUTS), "x", encoding="utf-8") as cuts:
        framer = _Framer(raw, frame)
        end_of_last_cut = 0
        with tarfile.open(fileobj=cast(IO[bytes], framer), mode="r|", bufsize=CHUNK,
                          tarinfo=BoundedTarInfo) as tar:
            while (info := tar.next()) is not None:
                tar.members.clear()  # type: ignore[attr-defined]  # flat memory
                if info.isreg() and info.size > 0:
                    path = "/".join(split_name(info.name))
                    gap = info.offset_data - end_of_last_cut
                    framer.cut(info.offset_data, info.size)
                    cuts.write(json.dumps({"gap": gap, "size": info.size, "path": path}) +
                               "\n")
                    end_of_last_cut = info.offset_data + info.size
        framer.finish()
        _check(Rebuilt(framer.size, framer.digest.hexdigest()), artifact, "read")


def rebuild(staging: Path, name: str, sink: Callable[[bytes], object]) -> Rebuilt:
    """The archive `name` from its frame, cuts and tree in `staging`, handed to `sink`
    chunk by chunk; its size and sha256. A cut whose file is missing, not a regular file,
    reached through a symlink or of another size is a BackupFailed."""
    digest = hashlib.sha256()
    size = 0

    def emit(chunk: bytes) -> None:
        nonlocal size
        digest.update(chunk)
        size += len(chunk)
        sink(chunk)

    with open(staging / (name + FRAME), "rb") as frame, \
            open(staging / (name + CUTS), encoding="utf-8") as cuts:
        for line in cuts:
            cut = _parse_cut(line, name)
            _copy(frame, cut.gap, emit)
            _copy_member(staging / TREE, cut, emit)
        _copy(frame, -1, emit)
    return Rebuilt(size, digest.hexdigest())


@dataclass(frozen=True)
class Cut:
    gap: int
    size: int
    path: str


def _parse_cut(line: str, name: str) -> Cut:
    try:
        cut = Cut(**json.loads(line))
    except (ValueError, TypeError) as error:
        raise BackupFailed(f"a line of {name}{CUTS} is not a cut: {error}", op=REBUILD) from error
    if not (isinstance(cut.gap, int) and isinstance(cut.size, int) and
            isinstance(cut.path, str) and cut.gap >= 0 and cut.size >= 0):
        raise BackupFailed(f"a line of {name}{CUTS} is not a cut", op=REBUILD)
    return cut


def _copy(source: IO[bytes], count: int, emit: Callable[[bytes], object]) -> None:
    """`count` bytes of `source` (all with -1); fewer is a damaged frame."""
    left = count
    while left != 0:
        chunk = source.read(CHUNK if left < 0 else min(CHUNK, left))
        if not chunk:
            if left > 0:
                raise BackupFailed("the archive's frame ends early", op=REBUILD)
            return
        emit(chunk)
        left -= len(chunk) if left > 0 else 0


def _copy_member(tree: Path, cut: Cut, emit: Callable[[bytes], object]) -> None:
    with os.fdopen(_open_beneath(tree, cut.path), "rb") as member:
        if os.fstat(member.fileno()).st_size != cut.size:
            raise BackupFailed(f"{cut.path} has another size than its archive member",
                               op=REBUILD)
        _copy(member, cut.size, emit)


def _open_beneath(tree: Path, path: str) -> int:
    """`tree/path` opened for reading without following any symlink on the way."""
    parts = split_name(path)
    try:
        directory = os.open(tree, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            for part in parts[:-1]:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW |
                                os.O_CLOEXEC, dir_fd=directory)
                os.close(directory)
                directory = inner
            fd = os.open(parts[-1], READ_NOFOLLOW, dir_fd=directory)
        finally:
            os.close(directory)
    except OSError as error:
        raise BackupFailed(f"{path}: {error.strerror}", op=REBUILD) from error
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BackupFailed(f"{path} is not a regular file", op=REBUILD)
    return fd
