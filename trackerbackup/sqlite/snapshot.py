"""One verified, consistent copy of a live database, by the strategy its journal mode
calls for (wal.py, rollback.py); and the switch of a database to WAL mode."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trackerbackup.errors import BackupFailed, EnvironmentProblem
from trackerbackup.log import fields, get_logger
from trackerbackup.sqlite.connection import (
    LOCK_BUSY_TIMEOUT,
    closing,
    connect,
    remove_copy,
    sqlite_failure,
)
from trackerbackup.sqlite.header import copy_rate, estimated_stall, read_header
from trackerbackup.sqlite.model import (
    NO_FAULTS,
    OP,
    SOURCE_KEYS,
    FaultPoints,
    Freezer,
    FreezerFactory,
    IntegrityMode,
    JournalMode,
    SqlitePolicy,
)
from trackerbackup.sqlite.rollback import rollback_copy
from trackerbackup.sqlite.verify import verify_snapshot
from trackerbackup.sqlite.wal import wal_pinned_copy

log = get_logger()


@dataclass(frozen=True)
class SnapshotReport:
    """What happened, for the manifest and the log.

    lock_held_seconds: how long running writers were kept from committing by our lock
    (0 in WAL mode; while the tracker is frozen its writers see freeze_seconds).
    copy_seconds: until a consistent copy existed; duration_seconds adds verification.
    wal_frames_used: WAL mode: the copied -wal was replayed (False: the database file
    alone was the snapshot, because the WAL held no frames or restarted under the copy).
    """

    journal_mode: JournalMode
    strategy: str
    copy_method: str
    size_bytes: int
    page_size: int
    page_count: int
    table_rows: dict[str, int]
    integrity: str
    integrity_mode: IntegrityMode
    lock_held_seconds: float
    estimated_stall_seconds: float
    freeze_seconds: float
    copy_seconds: float
    duration_seconds: float
    wal_frames_used: bool

    def to_manifest(self) -> dict[str, Any]:
        manifest = asdict(self)
        for key, value in manifest.items():
            if isinstance(value, float):
                manifest[key] = round(value, 6)
        return manifest


def snapshot(
    db_path: Path,
    dest: Path,
    policy: SqlitePolicy,
    freezer: FreezerFactory | None,
    *,
    source_keys: str = SOURCE_KEYS,
    faults: FaultPoints = NO_FAULTS,
) -> SnapshotReport:
    """Writes a verified, consistent copy of `db_path` to `dest` (created 0600).

    `freezer` makes a `Freezer` for "pause" or "stop"; None means no container writes
    to the file, so an over-budget copy runs under the lock without freezing anything
    (with a warning). `dest` is removed if anything fails; it is not fsynced (the
    caller stores it). `faults` are the tests' hooks into the copy.
    """
    started = time.monotonic()
    header = read_header(db_path, source_keys)
    size = db_path.stat().st_size
    estimate = 0.0
    try:
        if header.journal_mode == "wal":
            copy = wal_pinned_copy(db_path, dest, faults)
        else:
            estimate = estimated_stall("rollback", size, copy_rate(db_path, size, policy))
            copy = rollback_copy(db_path, dest, policy, freezer, estimate, faults)
        copied_at = time.monotonic()
        checked = verify_snapshot(dest, policy.integrity_check)
    except OSError as error:
        remove_copy(dest)
        raise EnvironmentProblem(
            f"cannot copy the database: {error.strerror}", op=OP, path=str(dest),
            hint="check free space and permissions where the snapshot is written",
        ) from error
    except BaseException:
        remove_copy(dest)
        raise
    report = SnapshotReport(
        journal_mode=header.journal_mode,
        strategy=copy.strategy,
        copy_method=copy.copy_method,
        size_bytes=dest.stat().st_size,
        page_size=checked.page_size,
        page_count=checked.page_count,
        table_rows=checked.table_rows,
        integrity="ok",
        integrity_mode=policy.integrity_check,
        lock_held_seconds=copy.lock_held_seconds,
        estimated_stall_seconds=estimate,
        freeze_seconds=copy.freeze_seconds,
        copy_seconds=copied_at - started,
        duration_seconds=time.monotonic() - started,
        wal_frames_used=copy.wal_frames_used,
    )
    _warn_if_over_budget(db_path, report, policy)
    return report


def _warn_if_over_budget(db_path: Path, report: SnapshotReport, policy: SqlitePolicy) -> None:
    if report.lock_held_seconds > policy.max_writer_stall:
        log.warning(
            "the lock on %s was held %.2f s, over the %g s budget (sqlite.max_writer_stall)",
            db_path, report.lock_held_seconds, policy.max_writer_stall,
            extra=fields(path=db_path, stall_ms=round(report.lock_held_seconds * 1000)),
        )


def enable_wal(db_path: Path, freezer: Freezer, *, source_keys: str = SOURCE_KEYS) -> None:
    """Switches the database to WAL mode (persistent) while its writers are frozen.

    Use a "stop" freezer: the switch needs an exclusive lock. The file keeps its owner
    and mode; SQLite removes the -wal and -shm it creates when we close, as the last user.
    """
    if read_header(db_path, source_keys).journal_mode == "wal":
        return
    before = db_path.stat()
    with freezer.frozen():
        try:
            with closing(connect(db_path, timeout=LOCK_BUSY_TIMEOUT)) as connection:
                mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.Error as error:
            raise sqlite_failure(error, db_path, op="enable WAL") from error
    after = db_path.stat()
    if mode != "wal" or read_header(db_path, source_keys).journal_mode != "wal":
        raise EnvironmentProblem(
            f"the database is still in {mode!r} mode after asking for WAL", op="enable WAL",
            path=str(db_path), hint="stop every program that uses the database, then retry",
        )
    if (after.st_uid, after.st_gid, after.st_mode) != (before.st_uid, before.st_gid,
                                                       before.st_mode):
        raise BackupFailed("the database file changed owner or mode", op="enable WAL",
                           path=str(db_path))
