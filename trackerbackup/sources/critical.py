"""The critical type: the tables and rows the tracker cannot get back, every few minutes.

One consistent read of the tracker's SQLite database copies `critical.tables` (rows
filtered by `critical.row_filters`) into a fresh SQLite file (`sqlite/filtered.py`),
which is integrity-checked, compressed and committed like every backup. How the read
respects `sqlite.max_writer_stall` depends on the journal mode:

- WAL ("wal-read-transaction"): the filtered read runs directly on the live database in
  one read transaction. A WAL reader never blocks a writer, so the tracker's writers wait
  0 s however long the read takes, and only the chosen rows are read.
- Rollback journal: a read transaction holds the SHARED lock, and no writer can commit
  until it ends; a filtered read of a large `torrents` table (a full scan without an
  index on `completed`) stalls the tracker for its whole length, which nothing bounds in
  advance. So the filtered read on the live database ("filtered-under-lock") gets the
  budget as a deadline: SQLite interrupts it there, the transaction is rolled back (the
  lock goes with it, nothing of it is kept), and the run falls back to
  "filtered-from-snapshot": the database type's snapshot (`sqlite.snapshot`) makes a
  consistent copy within the budget (or with the tracker paused, stopped, or refused, as
  `sqlite.over_budget` says), and the filter runs on that private copy. The fallback
  costs a full copy: switch the database to WAL (`trackerbackup sqlite enable-wal`) to
  make critical snapshots cheap whatever the size.

The manifest records the method, the copy strategy under it and how long writers waited.
The read side (verify, merge or replace restore) is `sources/critical_restore.py`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from trackerbackup import rowfilter, sqlite
from trackerbackup.config import Config, TypeSettings
from trackerbackup.docker import Container, Docker
from trackerbackup.errors import UsageError
from trackerbackup.log import Event, fields, get_logger
from trackerbackup.repository import PartialBackup
from trackerbackup.sources import Plan, SourceResult
from trackerbackup.sources.database import TrackerSqliteSource, store_snapshot
from trackerbackup.sqlite.connection import connect, read_only_uri, remove_copy
from trackerbackup.sqlite.filtered import (
    Connect,
    ReadOverBudget,
    estimated_read,
    filtered_copy,
    schema_problems,
)
from trackerbackup.sqlite.rollback import WRITER_WAKE_UP_SLACK
from trackerbackup.sqlite.wal import wal_reader

log = get_logger()

KIND = "critical"
WAL_METHOD = "wal-read-transaction"
LOCKED_METHOD = "filtered-under-lock"
SNAPSHOT_METHOD = "filtered-from-snapshot"
READER_BUSY_TIMEOUT_S = 5.0


def selection_of(settings: TypeSettings) -> rowfilter.Selection:
    return rowfilter.Selection(settings.tables,
                               tuple(rowfilter.parse(f) for f in settings.row_filters))


class CriticalSqliteSource:
    def __init__(self, config: Config, settings: TypeSettings, docker: Docker) -> None:
        self.settings = settings
        self.database = TrackerSqliteSource(config, settings, docker)
        self.selection = selection_of(settings)
        self._waited_before = 0.0  # a filtered read abandoned at the budget

    def plan(self) -> Plan:
        path, container = self.database.locate()
        # The header, not `sqlite.inspect`: no copy-rate sample on a run that copies little.
        journal_mode = sqlite.read_header(path).journal_mode
        size = path.stat().st_size
        self._check_schema(path, journal_mode)
        wal = journal_mode == "wal"
        return Plan(
            items=tuple(f"{path}: {table}" + (f" where {f.column} {f.operator} {f.value}"
                                               if (f := self.selection.filter_of(table))
                                               else "") for table in self.selection.tables),
            # rollback mode: the full snapshot and the filtered copy, side by side
            estimated_bytes=size if wal else 2 * size,
            warnings=() if wal else (
                "rollback-journal database: a critical snapshot whose filtered read does not "
                "fit sqlite.max_writer_stall copies the whole database first (trackerbackup "
                "sqlite enable-wal makes it a filtered read that never stalls the tracker)",),
            details={"container": container.name if container else "",
                     "journal_mode": journal_mode,
                     "method": WAL_METHOD if wal else f"{LOCKED_METHOD} (beyond the budget: "
                                                      f"{SNAPSHOT_METHOD})",
                     "max_writer_stall": self.database.policy.max_writer_stall},
        )

    def _check_schema(self, path: Path, journal_mode: str) -> None:
        problems = schema_problems(self._live_reader(path, journal_mode), path,
                                   self.selection, f"{self.settings.name}.tables",
                                   f"{self.settings.name}.row_filters")
        if problems:
            raise UsageError("; ".join(problems), op="check critical tables",
                             hint="list tables and columns the tracker's database has "
                                  "(sqlite3 DB .schema), or remove the key to get the "
                                  "default")

    @staticmethod
    def _live_reader(path: Path, journal_mode: str) -> Connect:
        if journal_mode == "wal":
            return lambda: wal_reader(path)
        # Waiting for a writer's commit to end stalls no one, and the read has its own
        # deadline: wait as long as the tracker's writers do (its pool: 5 s).
        return lambda: connect(read_only_uri(path), uri=True, timeout=READER_BUSY_TIMEOUT_S)

    def write(self, backup: PartialBackup, plan: Plan) -> SourceResult:
        path, container = self.database.locate()
        started = time.monotonic()
        dest = backup.scratch(path.name)
        try:
            journal_mode = sqlite.read_header(path).journal_mode
            if journal_mode == "wal":
                read = self._read_live(path, dest)
            else:
                read = self._read_under_lock(path, dest, journal_mode) or self._read_snapshot(
                    path, dest, backup.scratch(path.name + ".full"), container)
            checked = sqlite.verify_snapshot(dest, self.database.policy.integrity_check)
        except BaseException:
            remove_copy(dest)
            raise
        details = {"kind": KIND, "path": str(path),
                   "container": container.name if container else "",
                   "tables": list(self.selection.tables),
                   "row_filters": [str(f) for f in self.selection.filters],
                   **read, "size_bytes": dest.stat().st_size,
                   "table_rows": checked.table_rows, "integrity": "ok",
                   "integrity_mode": self.database.policy.integrity_check,
                   "duration_seconds": round(time.monotonic() - started, 6)}
        self._log(backup, details)
        store_snapshot(backup, self.settings, dest, path.name)
        return SourceResult(details={"source": details}, warnings=plan.warnings)

    def _read_live(self, path: Path, dest: Path) -> dict[str, Any]:
        copied = filtered_copy(self._live_reader(path, "wal"), path, dest, self.selection)
        return {"journal_mode": "wal", "method": WAL_METHOD, "snapshot_strategy": "",
                "writers_waited_seconds": 0.0,
                "read_seconds": round(copied.read_seconds, 6)}

    def _read_under_lock(self, path: Path, dest: Path,
                         journal_mode: str) -> dict[str, Any] | None:
        """The filtered read on the live database, if it ends within the budget."""
        budget = self.database.policy.max_writer_stall - WRITER_WAKE_UP_SLACK
        if budget <= 0:
            return None
        estimate, self._waited_before = estimated_read(
            self._live_reader(path, journal_mode), self.selection)
        if estimate > budget:
            log.info("the filtered read of %s would hold the lock about %.2f s, over the %g s "
                     "budget: filtering a snapshot instead", path, estimate,
                     self.database.policy.max_writer_stall, extra=fields(path=path))
            return None
        try:
            copied = filtered_copy(self._live_reader(path, journal_mode), path, dest,
                                   self.selection, budget=budget)
        except ReadOverBudget as over:
            remove_copy(dest)
            self._waited_before += over.held
            log.warning("the filtered read of %s did not fit the %g s budget (lock held "
                        "%.2f s; 0: a writer held it): filtering a snapshot instead", path,
                        self.database.policy.max_writer_stall, over.held,
                        extra=fields(path=path, stall_ms=round(over.held * 1000)))
            return None
        return {"journal_mode": journal_mode, "method": LOCKED_METHOD,
                "snapshot_strategy": "",
                "writers_waited_seconds": round(self._waited_before + copied.read_seconds, 6),
                "read_seconds": round(copied.read_seconds, 6)}

    def _read_snapshot(self, path: Path, dest: Path, full: Path,
                       container: Container | None) -> dict[str, Any]:
        try:
            report = sqlite.snapshot(path, full, self.database.policy,
                                     self.database.freezer(container))
            copied = filtered_copy(lambda: connect(full), full, dest, self.selection)
        finally:
            remove_copy(full)
        return {"journal_mode": report.journal_mode, "method": SNAPSHOT_METHOD,
                "snapshot_strategy": report.strategy,
                "writers_waited_seconds": round(self._waited_before + max(
                    report.lock_held_seconds, report.freeze_seconds), 6),
                "read_seconds": round(report.copy_seconds + copied.read_seconds, 6)}

    @staticmethod
    def _log(backup: PartialBackup, details: dict[str, Any]) -> None:
        stall_ms = round(details["writers_waited_seconds"] * 1000)
        log.info("critical snapshot of %s (%s): %s rows, tracker writes waited at most %d ms",
                 details["path"], details["method"], sum(details["table_rows"].values()),
                 stall_ms, extra=fields(Event.CRITICAL_SNAPSHOT_TAKEN, type=backup.type,
                                        id=backup.id, path=details["path"],
                                        strategy=details["method"], stall_ms=stall_ms,
                                        size=details["size_bytes"]))

