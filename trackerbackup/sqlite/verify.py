"""Is a snapshot a sound database? integrity_check (or quick_check), and its row counts."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from trackerbackup.errors import BackupFailed
from trackerbackup.log import Event, fields, get_logger
from trackerbackup.sqlite.connection import closing, connect, quoted
from trackerbackup.sqlite.model import IntegrityMode

log = get_logger()


@dataclass(frozen=True)
class Verification:
    page_size: int
    page_count: int
    table_rows: dict[str, int]


def verify_snapshot(path: Path, mode: IntegrityMode = "full") -> Verification:
    """integrity_check (or quick_check) must answer exactly 'ok'; counts every table."""
    pragma = "integrity_check" if mode == "full" else "quick_check"
    try:
        with closing(connect(path)) as connection:
            answer = [row[0] for row in connection.execute(f"PRAGMA {pragma}")]
            if answer != ["ok"]:
                raise corrupt(path, pragma, "; ".join(str(line) for line in answer[:5]))
            return Verification(
                page_size=connection.execute("PRAGMA page_size").fetchone()[0],
                page_count=connection.execute("PRAGMA page_count").fetchone()[0],
                table_rows=table_rows(connection),
            )
    except sqlite3.Error as error:
        raise corrupt(path, pragma, str(error)) from error


def table_rows(connection: sqlite3.Connection) -> dict[str, int]:
    names = [row[0] for row in connection.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name")]
    # Names come from the schema and are quoted: no injection.
    return {name: connection.execute(f"SELECT count(*) FROM {quoted(name)}")  # noqa: S608
            .fetchone()[0] for name in names}


def corrupt(path: Path, pragma: str, detail: str) -> BackupFailed:
    log.error("the snapshot %s failed %s: %s", path, pragma, detail,
              extra=fields(Event.VERIFY_FAILED, path=path))
    return BackupFailed(
        f"the snapshot failed {pragma}: {detail}", op="verify sqlite snapshot", path=str(path),
        hint="the source database may be corrupt: run 'PRAGMA integrity_check' on it",
    )
