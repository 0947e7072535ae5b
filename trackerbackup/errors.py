"""Errors an operator reads: what failed, on which path or key, and how to fix it.

Each class carries the exit code it maps to; `cli.main` turns them into exit codes in one
place.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    BACKUP_FAILED = 1
    USAGE = 2
    ENVIRONMENT = 3
    LOCKED = 75


class TrackerBackupError(Exception):
    """Base error: `op` is what was being done, `path` what it was done to, `hint` the fix."""

    exit_code = ExitCode.BACKUP_FAILED

    def __init__(
        self,
        message: str,
        *,
        op: str = "",
        path: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.op = op
        self.path = path
        self.hint = hint
        self.logged = False  # set once a journal entry for this error was written

    def __str__(self) -> str:
        text = f"{self.op}: {self.message}" if self.op else self.message
        if self.path:
            text += f" [{self.path}]"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class BackupFailed(TrackerBackupError):
    """A dump, copy or verification failed: nothing is recorded as a success."""

    exit_code = ExitCode.BACKUP_FAILED


class UnsafeArchiveMember(BackupFailed):
    """An archive member that extraction refuses: it would lead outside the target, write
    through a symlink, create a device, or carry a setuid bit nobody allowed. The archive
    cannot be restored as it is (exit 1, like a failed verification); nothing was written
    outside the target."""

    def __init__(self, member: str, reason: str, hint: str | None = None) -> None:
        super().__init__(
            f"member refused: {reason}", op="extract archive", path=member,
            hint=hint or "this archive was not written by trackerbackup as it is, or was "
                         "altered: run 'trackerbackup verify', inspect it with 'tar -tvf'")
        self.member = member
        self.reason = reason


class UsageError(TrackerBackupError):
    exit_code = ExitCode.USAGE


class ConfigError(TrackerBackupError):
    """One or more configuration problems, all reported together."""

    exit_code = ExitCode.USAGE

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        listing = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"{len(problems)} problem(s) in the configuration:\n{listing}",
            op="read configuration",
            path=source,
            hint="fix the keys named above, then run 'trackerbackup check'",
        )


class EnvironmentProblem(TrackerBackupError):
    """Something outside the program is not as it must be: container, database, path, disk."""

    exit_code = ExitCode.ENVIRONMENT


class LockBusy(TrackerBackupError):
    exit_code = ExitCode.LOCKED
