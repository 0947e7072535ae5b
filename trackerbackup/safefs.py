"""Reading and creating on disk without trusting what is there.

What a directory holds never decides where a read, a write or a delete goes: symlinks are
not followed (O_NOFOLLOW, lstat), a FIFO or a device never blocks a read (O_NONBLOCK, then
fstat must say regular file), small files are read with a size cap, and a directory that
holds backups must be a real directory owned by this user that nobody else can write.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from trackerbackup.errors import EnvironmentProblem
from trackerbackup.log import printable

PRIVATE_DIR_MODE = 0o700
READ_NOFOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class NotARegularFile(ValueError):
    """The path holds something else than a regular file of a sensible size."""


def read_small_file(path: Path, limit: int) -> bytes:
    """The content of the regular file `path`, at most `limit` bytes.

    Raises OSError (ELOOP for a symlink, ENOENT, ...) or NotARegularFile (a FIFO, socket,
    device or directory, or a file larger than `limit`), never blocks.
    """
    fd = os.open(path, READ_NOFOLLOW)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotARegularFile(f"{describe_type(info.st_mode)}, not a regular file")
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise NotARegularFile(f"larger than {limit:,} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def describe_type(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISREG, "a regular file"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "an unknown kind of file"


@dataclass(frozen=True)
class PrivateDir:
    """What `private_dir` found: absent, or a safe directory (and whether it tightened it)."""

    path: Path
    exists: bool
    tightened_from: int | None = None


def private_dir(path: Path, *, create: bool, what: str, fix: str,
                op: str = "open the backup directory") -> PrivateDir:
    """Make sure `path` is a directory only this user can use, or refuse.

    Refused (EnvironmentProblem, exit 3): a symlink, anything but a directory, a directory
    owned by another user, or one that others may write to (someone could have planted
    entries in it). A loose mode otherwise (group or others may read or enter) is
    tightened to 0700 when `create` (the caller is about to write), else left alone.
    Missing: created 0700 whatever the umask when `create`, else reported as absent.
    `what` names the directory in messages ("general.backup_dir"); `fix` is the hint;
    `op` what the refusal stopped.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        if not create:
            return PrivateDir(path, exists=False)
        _make(path, what)
        return private_dir(path, create=False, what=what, fix=fix, op=op)
    except OSError as error:
        raise _refusal(path, error, what, fix, op) from error
    try:
        info = os.fstat(fd)
        _refuse_if_shared(path, info, what, fix, op)
        loose = stat.S_IMODE(info.st_mode) & ~PRIVATE_DIR_MODE
        if loose and create:
            try:
                os.fchmod(fd, PRIVATE_DIR_MODE)
            except OSError as error:
                raise disk_problem(error, f"tighten the mode of {what}", path) from error
            return PrivateDir(path, exists=True, tightened_from=stat.S_IMODE(info.st_mode))
        return PrivateDir(path, exists=True)
    finally:
        os.close(fd)


def _make(path: Path, what: str) -> None:
    """Create `path` 0700 and its missing parents 0755, whatever the umask (a parent
    created 0777 by a umask of 0 would let anyone replace the backup directory)."""
    missing = [p for p in (*reversed(path.parents), path) if not os.path.lexists(p)]
    try:
        for directory in missing:
            mode = PRIVATE_DIR_MODE if directory == path else 0o755
            with contextlib.suppress(FileExistsError):  # created meanwhile: checked later
                os.mkdir(directory, mode)
                os.chmod(directory, mode)
    except OSError as error:
        raise disk_problem(error, f"create {what}", path) from error


def _refusal(path: Path, error: OSError, what: str, fix: str, op: str) -> EnvironmentProblem:
    try:
        kind = describe_type(os.lstat(path).st_mode)
    except OSError:
        kind = ""
    if kind and kind != "a directory":
        return EnvironmentProblem(
            f"{what} is {kind}, not a directory: backups are never written or deleted "
            "through it (it could lead outside the backup directory)",
            op=op, path=str(path), hint=fix)
    return disk_problem(error, f"open {what}", path)


def _refuse_if_shared(path: Path, info: os.stat_result, what: str, fix: str, op: str) -> None:
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid != os.geteuid():
        raise EnvironmentProblem(
            f"{what} is owned by uid {info.st_uid}, not by uid {os.geteuid()} (this user): "
            "that user could read or replace what is kept in it",
            op=op, path=str(path),
            hint=f"chown {os.geteuid()} {path}, or {fix}")
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise EnvironmentProblem(
            f"{what} is writable by other users (mode {mode:04o}): anything in it may have "
            "been planted",
            op=op, path=str(path),
            hint=f"check its content, then chmod 700 {path}")


def check_ancestors(path: Path, what: str, op: str = "open the backup directory") -> None:
    """Refuse a path whose existing parents another user could rename or replace: owned
    by a user other than root or this one, or writable by everyone without the sticky bit."""
    real = Path(os.path.realpath(path.parent))
    for ancestor in (real, *real.parents):
        try:
            info = os.lstat(ancestor)
        except FileNotFoundError:
            continue
        mode = info.st_mode
        if info.st_uid not in (0, os.geteuid()):
            problem = f"is owned by uid {info.st_uid}"
        elif mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
            problem = "is writable by every user"
        else:
            continue
        raise EnvironmentProblem(
            f"{ancestor}, a parent of {what}, {problem}: another user could replace "
            f"{what}", op=op, path=str(path),
            hint=f"put {what} under directories only root can change")


def disk_problem(error: OSError, op: str, path: Path | str | None = None,
                 backup_dir: Path | None = None) -> EnvironmentProblem:
    """An OSError met while writing or reading backups, as a message with its fix (exit 3).
    With `backup_dir`, an error on a path outside it gets a hint about that path instead."""
    where = path if path is not None else error.filename
    shown = os.fsdecode(where) if isinstance(where, str | bytes | os.PathLike) else None
    hint = disk_hint(error)
    if backup_dir is not None and shown is not None and not Path(shown).is_relative_to(
            backup_dir):
        hint = "check that path: permissions, the file system it is on (dmesg)"
    return EnvironmentProblem(error.strerror or str(error), op=op,
                              path=printable(shown) if shown is not None else None, hint=hint)


def disk_hint(error: OSError) -> str:
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return ("free space on the backup filesystem, lower the retention "
                "([<type>.retention]), or point general.backup_dir elsewhere")
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return ("general.backup_dir must be writable by root; the systemd unit may write only "
                "under its ReadWritePaths (default /var/backups/trackerbackup): add one with "
                "'systemctl edit trackerbackup@.service' -> [Service] "
                "ReadWritePaths=<backup_dir>, then run 'trackerbackup check'")
    return "check the backup filesystem (dmesg, mount options)"
