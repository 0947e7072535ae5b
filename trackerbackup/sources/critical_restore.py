"""Verify and restore a `source.kind = "critical"` backup: chosen tables of the tracker's
database in one SQLite file.

verify: integrity_check and the row counts the manifest recorded (as a database snapshot).

restore, in place (with the tracker stopped, and the live database kept in a safety copy
first, as the database restore does: `inplace.with_tracker_stopped`), in one transaction:

- merge (`--merge`): every row of the snapshot is upserted into the live table by the
  table's natural key (its first UNIQUE constraint, e.g. `keys.key`, `torrents.info_hash`;
  else its primary key). Counters that only grow (`MONOTONE`: `torrents.completed`,
  `torrent_aggregate_metrics.value`) become the larger of the two values; other columns
  take the snapshot's value. Rows only in the live table stay; new rows get new ids
  (nothing in the tracker refers to the ids). Use it on top of a full restore: restore
  last night's database backup, then merge the newest critical snapshot (RPO: minutes).
- replace (`--replace`): each table of the snapshot is emptied and refilled from it, ids
  included. Rows the snapshot left out (torrents with completed = 0: their next announce
  brings them back) are gone. Use it when the live tables themselves are untrusted.

`--target DIR` writes the snapshot as a database file and touches nothing live.
"""

from __future__ import annotations

import sqlite3
from contextlib import ExitStack
from pathlib import Path

from trackerbackup.errors import UsageError
from trackerbackup.inplace import with_tracker_stopped
from trackerbackup.log import fields, get_logger
from trackerbackup.sources import RestoreRequest, Step, StoredBackup
from trackerbackup.sources.database import (
    SqliteSnapshotKind,
    TrackerSqliteSource,
    steps_to_target,
)
from trackerbackup.sqlite.connection import closing, connect, quoted, sqlite_failure
from trackerbackup.sqlite.filtered import columns_of
from trackerbackup.stream import expand_artifact

log = get_logger()

OP = "restore critical snapshot"
MODES = ("merge", "replace")
MONOTONE = {"torrents": "completed", "torrent_aggregate_metrics": "value"}
SNAPSHOT_SCHEMA = "snapshot"
# The tracker is stopped, but a container's last write may still be finishing.
BUSY_TIMEOUT_S = 5.0


class CriticalKind(SqliteSnapshotKind):
    """A critical SQLite snapshot: verified as the database type's snapshot is; restored
    by merging it into the live database or replacing its tables (or to --target)."""

    def restore_steps(self, backup: StoredBackup, request: RestoreRequest) -> list[Step]:
        if request.only:
            raise UsageError("--only selects paths of an archive; a critical snapshot is "
                             "restored whole", op=OP)
        if request.target is not None:
            return steps_to_target(backup, request.target)
        if request.critical_mode not in MODES:
            raise UsageError("a critical snapshot is merged into the live database or "
                             "replaces its tables: say which", op=OP,
                             hint="--merge (upsert; the larger completed count wins; keeps "
                                  "every other row) or --replace (the tables become the "
                                  "snapshot's); --target DIR writes it as a file")
        source = TrackerSqliteSource(self.config, self.config.type("database"), self.docker)
        live, container = source.locate()
        if not live.is_file():
            raise UsageError(f"there is no live database at {live} to restore into", op=OP,
                             hint="restore a database backup first "
                                  "('trackerbackup restore database --latest'), then this")
        staged = self.config.general.backup_dir / f".critical-restore-{backup.id}.db"
        tables = ", ".join(backup.manifest.source.get("tables", []))
        mode = request.critical_mode

        def apply(stack: ExitStack) -> None:
            apply_snapshot(staged, live, mode)

        change = Step(f"{mode} tables {tables} of backup {backup.id} into {live} "
                      "(one transaction)", apply, consent=True)
        return [_stage(backup, staged),
                *with_tracker_stopped(backup, live, container, self.docker,
                                      self.config.general.backup_dir,
                                      self.config.general.run_dir, [change],
                                      safety_copy=request.safety_copy)]


def _stage(backup: StoredBackup, staged: Path) -> Step:
    artifact_path, artifact = backup.only_artifact()

    def run(stack: ExitStack) -> None:
        stack.callback(staged.unlink, missing_ok=True)
        staged.unlink(missing_ok=True)
        expand_artifact(artifact_path, artifact.compression, artifact.raw_size,
                        artifact.raw_sha256, staged)

    return Step(f"decompress backup {backup.id} to {staged}", run)


def apply_snapshot(snapshot: Path, live: Path, mode: str) -> dict[str, int]:
    """Merges or replaces every table of `snapshot` into `live`, all or nothing; returns
    the rows each table has afterwards."""
    try:
        with closing(connect(live, timeout=BUSY_TIMEOUT_S)) as connection:
            connection.execute(f"ATTACH DATABASE ? AS {SNAPSHOT_SCHEMA}", (str(snapshot),))
            tables = [row[0] for row in connection.execute(
                f"SELECT name FROM {SNAPSHOT_SCHEMA}.sqlite_schema "  # noqa: S608
                "WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
            connection.execute("BEGIN IMMEDIATE")
            try:
                for table in tables:
                    columns = _shared_columns(connection, table, live)
                    if mode == "merge":
                        _merge(connection, table, columns)
                    else:
                        _replace(connection, table, columns)
                rows = {t: connection.execute(f"SELECT count(*) FROM main.{quoted(t)}")  # noqa: S608
                        .fetchone()[0] for t in tables}
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
    except sqlite3.Error as error:
        raise sqlite_failure(error, live, op=OP) from error
    log.info("%s of the critical snapshot into %s: rows now %s", mode, live, rows,
             extra=fields(path=live))
    return rows


def _shared_columns(connection: sqlite3.Connection, table: str, live: Path) -> list[str]:
    wanted = columns_of(connection, table, SNAPSHOT_SCHEMA)
    present = set(columns_of(connection, table))
    missing = [column for column in wanted if column not in present]
    if not present or missing:
        what = f"table {table!r}" if not present else f"columns {missing} of table {table!r}"
        raise UsageError(f"the live database lacks {what}", op=OP, path=str(live),
                         hint="restore a database backup of the same tracker version first")
    return wanted


def _replace(connection: sqlite3.Connection, table: str, columns: list[str]) -> None:
    names = ", ".join(quoted(c) for c in columns)
    # Identifiers come from the schemas and are quoted.
    connection.execute(f"DELETE FROM main.{quoted(table)}")  # noqa: S608
    connection.execute(f"INSERT INTO main.{quoted(table)} ({names}) "  # noqa: S608
                       f"SELECT {names} FROM {SNAPSHOT_SCHEMA}.{quoted(table)}")


def _merge(connection: sqlite3.Connection, table: str, columns: list[str]) -> None:
    key, rowid_alias = natural_key(connection, table)
    inserted = [c for c in columns if c != rowid_alias or c in key]
    updated = [c for c in inserted if c not in key]
    names = ", ".join(quoted(c) for c in inserted)
    assignments = ", ".join(
        f"{quoted(c)} = max({quoted(c)}, excluded.{quoted(c)})" if MONOTONE.get(table) == c
        else f"{quoted(c)} = excluded.{quoted(c)}" for c in updated)
    action = f"DO UPDATE SET {assignments}" if assignments else "DO NOTHING"
    # "WHERE true": an upsert after a SELECT needs it to parse (SQLite's documentation).
    connection.execute(
        f"INSERT INTO main.{quoted(table)} ({names}) "  # noqa: S608
        f"SELECT {names} FROM {SNAPSHOT_SCHEMA}.{quoted(table)} WHERE true "
        f"ON CONFLICT ({', '.join(quoted(c) for c in key)}) {action}")


def natural_key(connection: sqlite3.Connection, table: str) -> tuple[list[str], str | None]:
    """The live table's first UNIQUE constraint (else its primary key), and the column
    that is an alias of the rowid (an INTEGER PRIMARY KEY), if any."""
    info = connection.execute(f"PRAGMA main.table_info({quoted(table)})").fetchall()
    primary = [row[1] for row in sorted(info, key=lambda row: row[5]) if row[5] > 0]
    rowid_alias = primary[0] if len(primary) == 1 and any(
        row[1] == primary[0] and str(row[2]).upper() == "INTEGER" for row in info) else None
    indexes = sorted(connection.execute(f"PRAGMA main.index_list({quoted(table)})"),
                     key=lambda index: index[1])  # sqlite_autoindex_T_1, _2: declared order
    for index in indexes:
        if index[2] and index[3] == "u":  # unique, from a UNIQUE constraint
            return [row[2] for row in connection.execute(
                f"PRAGMA main.index_info({quoted(index[1])})")], rowid_alias
    if not primary:
        raise UsageError(f"table {table!r} has neither a UNIQUE constraint nor a primary key "
                         "to merge rows by", op=OP, hint="restore with --replace")
    return primary, rowid_alias
