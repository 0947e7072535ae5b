"""The target directory of an extraction, reached only through directory descriptors.

Every path component is opened with O_NOFOLLOW|O_DIRECTORY relative to its parent's
descriptor (openat), and every entry is created, renamed, chowned or timed relative to its
parent's descriptor without following symlinks. So no symlink is ever followed: not one
already in the target, not one the archive created a moment ago, not one swapped in while
we work. What stands in the way is reported as an `Obstacle` for the caller to judge.

Files, symlinks and hard links are made under a temporary name (TEMP_PREFIX) in their
directory and renamed into place, so a reader sees the old entry or the new one. Files are
fsynced before the rename; directories get their owner, mode and mtime last (`finish`),
after their content, and are fsynced then.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path

from trackerbackup.extract_rules import Member, Parts

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
TEMP_PREFIX = ".trackerbackup-extract-"
NEW_DIR_MODE = 0o700  # until `finish` gives the directory its own mode
IMPLICIT_DIR_MODE = 0o755  # a parent the archive does not hold (e.g. opt/ above opt/torrust)


class Obstacle(Exception):
    """Something other than a directory where a directory is needed (`mode` says what)."""

    def __init__(self, parts: Parts, mode: int) -> None:
        super().__init__("/".join(parts))
        self.parts = parts
        self.mode = mode


def temp_name() -> str:
    return f"{TEMP_PREFIX}{secrets.token_hex(8)}.tmp"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Tree:
    """Opened on an existing directory (`root_fd`), or on none in a dry run whose target
    does not exist yet: then every lookup answers "not there"."""

    def __init__(self, root_fd: int | None) -> None:
        self._root = root_fd
        self._cached: tuple[Parts, int] | None = None  # members come grouped by directory
        self._dirty: set[Parts] = set()  # directories whose entries changed: fsync them

    def close(self) -> None:
        self._uncache()
        if self._root is not None:
            os.close(self._root)
            self._root = None

    def _uncache(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def parent(self, parts: Parts, *, create: bool) -> int | None:
        """The descriptor of the directory that holds `parts` (owned by the tree), creating
        missing directories on the way when `create`; None when it does not exist."""
        directory = parts[:-1]
        if self._cached is not None and self._cached[0] == directory:
            return self._cached[1]
        fd = self.open_dir(directory, create=create)
        if fd is not None:
            self._uncache()
            self._cached = (directory, fd)
        return fd

    def open_dir(self, parts: Parts, *, create: bool = False) -> int | None:
        """A new descriptor for the directory `parts` (the caller closes it), walking from
        the root one component at a time; None when something on the way does not exist."""
        if self._root is None:
            return None
        fd = os.dup(self._root)
        try:
            for depth in range(1, len(parts) + 1):
                child = self._open_child(fd, parts[:depth], create)
                os.close(fd)
                fd = child
                if fd < 0:
                    return None
            return fd
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise

    def _open_child(self, fd: int, parts: Parts, create: bool) -> int:
        name = parts[-1]
        try:
            return os.open(name, DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                return -1
            return self._make_implicit(fd, parts)
        except OSError:
            found = lstat(fd, name)
            if found is None or stat.S_ISDIR(found.st_mode):
                raise
            raise Obstacle(parts, found.st_mode) from None

    def _make_implicit(self, fd: int, parts: Parts) -> int:
        os.mkdir(parts[-1], IMPLICIT_DIR_MODE, dir_fd=fd)
        self._dirty.add(parts[:-1])
        child = os.open(parts[-1], DIR_FLAGS, dir_fd=fd)
        os.fchmod(child, IMPLICIT_DIR_MODE)  # whatever the umask
        return child

    def mkdir(self, parent: int, parts: Parts) -> None:
        os.mkdir(parts[-1], NEW_DIR_MODE, dir_fd=parent)
        self._dirty.add(parts[:-1])

    def write_file(self, parent: int, member: Member, chunks: Iterable[bytes]) -> int:
        """Write the content under a temporary name, set owner, mode and mtime, fsync,
        rename into place; the temporary file is removed on any failure. Returns bytes."""
        temp = temp_name()
        fd = os.open(temp, FILE_FLAGS, 0o600, dir_fd=parent)
        try:
            written = 0
            try:
                for chunk in chunks:
                    _write_all(fd, chunk)
                    written += len(chunk)
                os.fchown(fd, member.uid, member.gid)  # before chmod: chown drops setuid
                os.fchmod(fd, member.mode)
                os.utime(fd, ns=(member.mtime_ns, member.mtime_ns))
                os.fsync(fd)
            finally:
                os.close(fd)
            self._publish(parent, temp, member.parts)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=parent)
            raise
        return written

    def symlink(self, parent: int, member: Member) -> None:
        temp = temp_name()
        os.symlink(member.link, temp, dir_fd=parent)
        try:
            os.chown(temp, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
            os.utime(temp, ns=(member.mtime_ns, member.mtime_ns), dir_fd=parent,
                     follow_symlinks=False)
            self._publish(parent, temp, member.parts)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=parent)
            raise

    def hardlink(self, parent: int, member: Member, source: Parts) -> bool:
        """Link `member` to the regular file `source`; False when that is not one (any
        more). linkat without AT_SYMLINK_FOLLOW: a symlink swapped in is never followed."""
        source_dir = self.open_dir(source[:-1])
        if source_dir is None:
            return False
        temp = temp_name()
        try:
            found = lstat(source_dir, source[-1])
            if found is None or not stat.S_ISREG(found.st_mode):
                return False
            os.link(source[-1], temp, src_dir_fd=source_dir, dst_dir_fd=parent,
                    follow_symlinks=False)
            self._publish(parent, temp, member.parts)
        finally:
            # Also when the name already was this very file: rename() then does nothing.
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=parent)
            os.close(source_dir)
        return True

    def _publish(self, parent: int, temp: str, parts: Parts) -> None:
        os.rename(temp, parts[-1], src_dir_fd=parent, dst_dir_fd=parent)
        self._dirty.add(parts[:-1])

    def finish(self, directories: dict[Parts, Member]) -> None:
        """Give each extracted directory its owner, mode and mtime, deepest first (after
        their content, so no later entry changes an mtime), and fsync every directory
        whose entries changed."""
        self._uncache()
        for parts in sorted(directories, key=len, reverse=True):
            member = directories[parts]
            fd = self._existing_dir(parts)
            try:
                os.fchown(fd, member.uid, member.gid)
                os.fchmod(fd, member.mode)
                os.utime(fd, ns=(member.mtime_ns, member.mtime_ns))
                os.fsync(fd)
            finally:
                os.close(fd)
        for parts in sorted(self._dirty - directories.keys(), key=len, reverse=True):
            fd = self._existing_dir(parts)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _existing_dir(self, parts: Parts) -> int:
        fd = self.open_dir(parts)
        if fd is None:
            raise FileNotFoundError(f"directory vanished during the extraction: "
                                    f"{'/'.join(parts)}")
        return fd


def lstat(parent: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return None


def open_root(target: Path, *, create: bool) -> tuple[int | None, bool]:
    """The target's descriptor (O_NOFOLLOW: a symlink as target is refused with ELOOP or
    ENOTDIR) and whether it was created now, 0700. None when absent and not `create`."""
    try:
        return os.open(target, DIR_FLAGS), False
    except FileNotFoundError:
        if not create:
            return None, False
    os.mkdir(target, NEW_DIR_MODE)
    fd = os.open(target, DIR_FLAGS)
    os.fchmod(fd, NEW_DIR_MODE)
    return fd, True

