"""One lock per backup type: two runs of one type never overlap, different types may.

`hold(run_dir, "database")` takes an exclusive `flock` on `<run_dir>/database.lock` and
writes the holder's PID into it, so a second run can say who holds it. The kernel drops
the lock when the holder's file is closed, by exit or by SIGKILL, so a stale lock cannot
exist. The lock file is never deleted: a run that deleted it could race with a waiter that
has it open, and a third run would then lock a new file while the waiter holds the old one.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from trackerbackup.errors import EnvironmentProblem, LockBusy
from trackerbackup.log import fields, get_logger
from trackerbackup.safefs import check_ancestors, private_dir

BUSY_HINT = "wait for it to finish, or use --wait"
RUN_DIR_OP = "open the run directory"
RUN_DIR_FIX = ("set general.run_dir to a directory only root uses (the unit's default, "
               "/run/trackerbackup, is created by systemd)")


def private_run_dir(run_dir: Path, subdirectory: str = "", *, create: bool = True) -> Path:
    """`run_dir` (or a subdirectory of it), created 0700 if missing when `create`; refused
    if it is a symlink, not ours or writable by others: locks and freeze markers are
    trusted, so no one else may plant them (a planted marker would make `recover` start a
    container)."""
    check_ancestors(run_dir, "general.run_dir", op=RUN_DIR_OP)
    path, what = run_dir, "general.run_dir"
    private_dir(path, create=create, what=what, fix=RUN_DIR_FIX, op=RUN_DIR_OP)
    if subdirectory:
        path, what = run_dir / subdirectory, f"{what}/{subdirectory}"
        private_dir(path, create=create, what=what, fix=RUN_DIR_FIX, op=RUN_DIR_OP)
    return path


def lock_path(run_dir: Path, backup_type: str) -> Path:
    """The lock file of `backup_type`; refuses names that are not a plain file name."""
    if not backup_type or backup_type.startswith(".") or "/" in backup_type or "\0" in backup_type:
        raise ValueError(f"not a backup type name: {backup_type!r}")
    return run_dir / f"{backup_type}.lock"


@contextmanager
def hold(run_dir: Path, backup_type: str, *, wait: bool = False) -> Iterator[None]:
    """Hold the lock of `backup_type` for the `with` block.

    Creates `run_dir` (0700) if missing and refuses an unsafe one (`private_run_dir`). If
    another process holds the lock: with `wait`, block until it is free; otherwise raise
    `LockBusy` naming the holder's PID.
    Raises `EnvironmentProblem` if the directory or file cannot be created or opened.
    """
    path = lock_path(run_dir, backup_type)
    op = f"take the {backup_type} lock"
    private_run_dir(run_dir)
    try:
        # O_NOFOLLOW: never follow a symlink planted at the lock path; O_CLOEXEC: processes
        # this run starts must not inherit (and so keep alive) the lock.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise EnvironmentProblem(
            error.strerror or str(error),
            op=op,
            path=str(path),
            hint="the run directory must be writable by this user (see run_dir in the config)",
        ) from error
    try:
        _acquire(fd, path, backup_type, op, wait)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            # Empty the file while still holding the lock, so the next reader never names
            # a PID that no longer holds it; the close below releases the lock.
            with suppress(OSError):
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def _acquire(fd: int, path: Path, backup_type: str, op: str, wait: bool) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except OSError as error:
        if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise EnvironmentProblem(str(error), op=op, path=str(path)) from error
    holder = _holder(fd)
    if not wait:
        raise LockBusy(
            f"another {backup_type} backup is running (PID {holder})",
            op=op,
            path=str(path),
            hint=BUSY_HINT,
        )
    get_logger().info(
        "waiting for the %s lock, held by PID %s",
        backup_type,
        holder,
        extra=fields(type=backup_type, path=path),
    )
    fcntl.flock(fd, fcntl.LOCK_EX)


def _holder(fd: int) -> str:
    """The PID written by the holder, or "unknown" (it may not have written it yet)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"
