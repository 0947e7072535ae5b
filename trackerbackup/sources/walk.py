"""Walking the trees to archive without following anything found in them.

Each directory is opened with O_NOFOLLOW and its children are looked at relative to that
descriptor (lstat, open, readlink with `dir_fd`), so an entry swapped for a symlink while
the walk runs is archived as the link it has become, never followed. The backup directory
is recognised by its device and inode, whatever path leads to it (`..`, a symlinked
compose_dir, a bind mount), and never entered.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from trackerbackup.errors import EnvironmentProblem
from trackerbackup.log import printable

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# A vanished or swapped entry is a change while reading, not a failure of the run.
CHANGED_ERRNOS = (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.ENXIO)


def member_name(path: str | Path) -> str:
    return str(path).lstrip("/")


@dataclass(frozen=True, slots=True)
class Entry:
    """One thing to archive: `name` relative to the directory `parent_fd` (a root: its
    absolute path and no descriptor), with its lstat when it was listed. `path` is the
    absolute path as text (a str, not a Path: the walk makes one per file)."""

    path: str
    parent_fd: int | None
    name: str
    st: os.stat_result


def open_entry(entry: Entry, flags: int, kind: str) -> int | None:
    """A descriptor for `entry`, opened relative to its directory; None if the entry
    vanished or was swapped for something `flags` refuse (a link, a non-directory)."""
    try:
        return os.open(entry.name, flags, dir_fd=entry.parent_fd)
    except PermissionError as error:
        raise EnvironmentProblem(f"{kind} not readable: {error.strerror}",
                                 op="archive files", path=printable(entry.path),
                                 hint="run as root, or exclude it") from error
    except OSError as error:
        if error.errno not in CHANGED_ERRNOS:
            raise
        return None


@dataclass(frozen=True)
class FileSet:
    """Resolved roots to archive, with the paths that must be left out."""

    roots: tuple[Path, ...]
    missing: tuple[Path, ...]
    exclude_patterns: tuple[str, ...]
    exclude_dirs: tuple[Path, ...]

    def excluded(self, path: str | Path, name: str | None = None) -> bool:
        """`path` (its member name or its own `name`) matches an exclude pattern."""
        if not self.exclude_patterns:
            return False
        member = member_name(path)
        base = name if name is not None else os.path.basename(member)
        return any(fnmatch.fnmatchcase(member, p) or fnmatch.fnmatchcase(base, p)
                   for p in self.exclude_patterns)

    def walk(self, notes: list[str] | None = None) -> Iterator[Entry]:
        """Every entry to archive, parents before children, names sorted. Entries that
        changed while walked are noted in `notes`; unreadable directories raise."""
        return Walk(self, notes if notes is not None else []).entries()


@dataclass
class _Open:
    """A directory being walked: its path, descriptor, and the names still to list."""

    path: str
    fd: int
    names: Iterator[str]


@dataclass
class Walk:
    """Depth first with an explicit stack of open directories (no generator per level:
    a nested `yield from` passes every entry up through each level above it)."""

    files: FileSet
    notes: list[str]
    _skip: set[tuple[int, int]] = field(default_factory=set)
    _skip_real: tuple[str, ...] = ()

    def entries(self) -> Iterator[Entry]:
        for directory in self.files.exclude_dirs:
            try:
                info = os.stat(directory)
            except OSError:
                continue
            self._skip.add((info.st_dev, info.st_ino))
            self._skip_real += (os.path.realpath(directory),)
        for root in self.files.roots:
            entry = self._root(root)
            if entry is not None:
                yield from self._tree(entry)

    def _root(self, root: Path) -> Entry | None:
        real = os.path.realpath(root)
        if self.files.excluded(root) or any(
                real == d or real.startswith(d.rstrip("/") + "/") for d in self._skip_real):
            return None
        try:
            info = os.lstat(root)
        except FileNotFoundError:
            self.notes.append(f"vanished while read: {printable(str(root))}")
            return None
        return Entry(str(root), None, str(root), info)

    def _tree(self, top: Entry) -> Iterator[Entry]:
        stack: list[_Open] = []
        try:
            opened = self._enter(top, stack)
            if opened is not False:
                yield top
            while stack:
                current = stack[-1]
                name = next(current.names, None)
                if name is None:
                    os.close(stack.pop().fd)
                    continue
                entry = self._child(current, name)
                if entry is not None and self._enter(entry, stack) is not False:
                    yield entry
        finally:
            for left in stack:
                os.close(left.fd)

    def _enter(self, entry: Entry, stack: list[_Open]) -> bool | None:
        """A directory is opened and pushed (False if it is skipped or vanished); None
        for anything else."""
        if not stat.S_ISDIR(entry.st.st_mode):
            return None
        if (entry.st.st_dev, entry.st.st_ino) in self._skip:
            return False
        fd = self._open_dir(entry)
        if fd is None:
            return False
        try:
            with os.scandir(fd) as listing:
                names = sorted(e.name for e in listing)
        except BaseException:
            os.close(fd)
            raise
        stack.append(_Open(entry.path, fd, iter(names)))
        return True

    def _child(self, directory: _Open, name: str) -> Entry | None:
        path = f"{directory.path}/{name}" if directory.path != "/" else f"/{name}"
        if self.files.excluded(path, name):
            return None
        try:
            info = os.lstat(name, dir_fd=directory.fd)
        except FileNotFoundError:
            self.notes.append(f"vanished while read: {printable(path)}")
            return None
        return Entry(path, directory.fd, name, info)

    def _open_dir(self, entry: Entry) -> int | None:
        fd = open_entry(entry, DIR_FLAGS, "directory")
        if fd is None:
            self.notes.append(f"changed while read: {printable(entry.path)}")
            return None
        info = os.fstat(fd)
        if (info.st_dev, info.st_ino) in self._skip:
            os.close(fd)
            return None
        return fd
