"""Chosen tables and rows of an SQLite database, copied into a fresh file in one read.

`filtered_copy` opens the source, attaches the new file and runs one transaction that
only reads the source: every `INSERT INTO copy.t SELECT ... FROM main.t WHERE ...` sees
the same state, the one pinned by the transaction's first read (a WAL read mark, or the
SHARED lock of a rollback-journal database). The copy's tables and indexes are created
first from the source's schema; inside the transaction the schema is read again and must
be the same, so a copy never mixes two schemas.

`schema_problems` is what `check` says about the configured tables and filters.
"""

from __future__ import annotations

import errno
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trackerbackup.errors import BackupFailed
from trackerbackup.rowfilter import RowFilter, Selection, selection_problems
from trackerbackup.safefs import disk_problem
from trackerbackup.sqlite.connection import (
    SQLITE_BUSY,
    SQLITE_FULL,
    closing,
    connect,
    quoted,
    sqlite_failure,
)

OP = "copy critical tables"
COPY_SCHEMA = "critical"
COPY_CACHE_KIB = -64 * 1024  # 64 MiB
STAGE_PREFIX = "critical_stage_"
SAMPLE_ROWS = 200_000
# The staged copy over a bare filtered scan of the same rows (its TEMP tables' writes).
STAGING_COST = 1.5
Connect = Callable[[], sqlite3.Connection]


def schema_of(connection: sqlite3.Connection, tables: tuple[str, ...],
              schema: str = "main") -> list[str]:
    """The CREATE statements of `tables` and of their explicit indexes, in a fixed order."""
    marks = ", ".join("?" for _ in tables)
    rows = connection.execute(
        f"SELECT sql FROM {schema}.sqlite_schema WHERE sql IS NOT NULL "  # noqa: S608
        f"AND tbl_name IN ({marks}) ORDER BY type = 'index', tbl_name, name", tables)
    return [row[0] for row in rows]


def columns_of(connection: sqlite3.Connection, table: str, schema: str = "main") -> list[str]:
    return [row[1] for row in connection.execute(
        f"PRAGMA {schema}.table_info({quoted(table)})")]


def schema_problems(connect_source: Connect, db_path: Path, selection: Selection,
                    tables_key: str, filters_key: str) -> list[str]:
    """Each configured table the database lacks, each filter on a column it lacks or on a
    table that is not copied, each naming its configuration key."""
    try:
        with closing(connect_source()) as connection:
            existing = {table: columns_of(connection, table) for table in selection.tables}
    except sqlite3.Error as error:
        raise sqlite_failure(error, db_path, op=OP) from error
    return selection_problems(existing, str(db_path), selection, tables_key, filters_key)


@dataclass(frozen=True)
class FilteredCopy:
    read_seconds: float  # how long the read transaction on the source was open


class ReadOverBudget(Exception):
    """The read transaction was interrupted (and rolled back) at its time budget, or
    (`held` 0) could not start within the busy timeout: a writer held the lock."""

    def __init__(self, held: float) -> None:
        super().__init__(f"read transaction open {held:.3f} s")
        self.held = held


def estimated_read(connect_source: Connect, selection: Selection) -> tuple[float, float]:
    """How long a budgeted (staged) read of the selection would take: the rows of each
    table's first SAMPLE_ROWS rowids, filtered as the copy filters them, timed and scaled
    by its rowid span (at least its rows); and how long the sample itself held the
    database. (inf, 0) if the sample could not be read."""
    try:
        with closing(connect_source()) as source:
            source.execute("BEGIN")
            started = time.monotonic()
            estimate = sum(_sampled_seconds(source, table, selection.filter_of(table))
                           for table in selection.tables)
            source.execute("COMMIT")
            return estimate * STAGING_COST, time.monotonic() - started
    except sqlite3.Error:
        return math.inf, 0.0


def _sampled_seconds(source: sqlite3.Connection, table: str,
                     row_filter: RowFilter | None) -> float:
    # Identifiers come from the schema and are quoted, the values are parameters.
    named = f"main.{quoted(table)}"
    # Two queries: SQLite answers a lone min() or max() from the b-tree's edge.
    first: int | None = source.execute(f"SELECT min(rowid) FROM {named}").fetchone()[0]  # noqa: S608
    last: int = source.execute(f"SELECT max(rowid) FROM {named}").fetchone()[0]  # noqa: S608
    if first is None:
        return 0.0
    where, parameters = ("", ()) if row_filter is None else (
        f" AND {row_filter.sql()}", (row_filter.value,))
    started = time.monotonic()
    source.execute(f"SELECT count(*) FROM {named} WHERE rowid < ?{where}",  # noqa: S608
                   (first + SAMPLE_ROWS, *parameters)).fetchone()
    return (time.monotonic() - started) * max(1.0, (last - first + 1) / SAMPLE_ROWS)


def filtered_copy(connect_source: Connect, db_path: Path, dest: Path,
                  selection: Selection, budget: float | None = None) -> FilteredCopy:
    """Writes the selection of the source into `dest` (a new file); `dest` is left
    behind on failure for the caller to remove. `budget`: the read transaction is
    interrupted after that many seconds (ReadOverBudget)."""
    try:
        with closing(connect_source()) as source:
            statements = schema_of(source, selection.tables)
            _create(dest, statements)
            source.execute("ATTACH DATABASE ? AS " + COPY_SCHEMA, (str(dest),))
            source.execute(f"PRAGMA {COPY_SCHEMA}.synchronous = OFF")
            source.execute(f"PRAGMA {COPY_SCHEMA}.journal_mode = MEMORY")
            # The copy's pages stay in memory until it is written (its index gets rows in
            # random order).
            source.execute(f"PRAGMA {COPY_SCHEMA}.cache_size = {COPY_CACHE_KIB}")
            return _copy_in_one_read(source, db_path, statements, selection, budget)
    except sqlite3.Error as error:
        code = getattr(error, "sqlite_errorcode", 0) & 0xFF
        if budget is not None and code == SQLITE_BUSY:
            raise ReadOverBudget(0.0) from error
        if code == SQLITE_FULL:  # the copy's file system (the backup's), not the tracker's
            raise disk_problem(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), OP,
                               dest) from error
        raise sqlite_failure(error, db_path, op=OP) from error


def _create(dest: Path, statements: list[str]) -> None:
    with closing(connect(dest)) as copy:
        copy.execute("BEGIN")
        for statement in statements:
            copy.execute(statement)
        copy.execute("COMMIT")


def _copy_in_one_read(source: sqlite3.Connection, db_path: Path, statements: list[str],
                      selection: Selection, budget: float | None) -> FilteredCopy:
    """With a budget (the reader blocks writers), the rows go to TEMP tables without
    indexes first, the cheapest copy, and into the indexed copy after the read ended."""
    staged = budget is not None
    copied = _read(source, db_path, statements, selection, budget, staged)
    if staged:
        for number, table in enumerate(selection.tables):
            _unstage(source, table, f"{STAGE_PREFIX}{number}")
    return copied


def _read(source: sqlite3.Connection, db_path: Path, statements: list[str],
          selection: Selection, budget: float | None, staged: bool) -> FilteredCopy:
    source.execute("BEGIN")
    fired = threading.Event()

    def interrupt() -> None:
        fired.set()
        source.interrupt()  # a no-op once no statement runs

    timer = None if budget is None else threading.Timer(budget, interrupt)
    started = time.monotonic()
    try:
        if timer is not None:
            timer.start()
        if schema_of(source, selection.tables) != statements:  # the first read pins the state
            raise BackupFailed("the database schema changed during the copy", op=OP,
                               path=str(db_path), hint="run the backup again")
        for number, table in enumerate(selection.tables):
            target = f"temp.{STAGE_PREFIX}{number}" if staged else None
            _copy_table(source, table, selection.filter_of(table), target)
        source.execute("COMMIT")
        return FilteredCopy(read_seconds=time.monotonic() - started)
    except BaseException as error:
        if source.in_transaction:
            source.execute("ROLLBACK")
        if fired.is_set() and isinstance(error, sqlite3.OperationalError):
            raise ReadOverBudget(time.monotonic() - started) from error
        raise
    finally:
        if timer is not None:
            timer.cancel()


def _copy_table(source: sqlite3.Connection, table: str, row_filter: RowFilter | None,
                stage: str | None = None) -> None:
    """Into the copy's table, or (`stage`) into a new TEMP table of that name."""
    names = ", ".join(quoted(column) for column in columns_of(source, table))
    where, parameters = ("", ()) if row_filter is None else (
        f" WHERE {row_filter.sql()}", (row_filter.value,))
    select = f"SELECT {names} FROM main.{quoted(table)}{where}"  # noqa: S608
    # Identifiers come from the schema and are quoted, the value is a parameter.
    if stage is None:
        source.execute(f"INSERT INTO {COPY_SCHEMA}.{quoted(table)} ({names}) {select}",
                       parameters)
    else:
        source.execute(f"CREATE TABLE {stage} AS {select}", parameters)


def _unstage(source: sqlite3.Connection, table: str, stage: str) -> None:
    names = ", ".join(quoted(column) for column in columns_of(source, table, COPY_SCHEMA))
    source.execute("BEGIN")
    source.execute(f"INSERT INTO {COPY_SCHEMA}.{quoted(table)} ({names}) "  # noqa: S608
                   f"SELECT {names} FROM temp.{stage}")
    source.execute(f"DROP TABLE temp.{stage}")
    source.execute("COMMIT")
