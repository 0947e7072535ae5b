"""Merging or replacing a critical snapshot's tables into the live MySQL database.

The snapshot has been loaded into a scratch database on the same server; one client
session then runs, in one transaction (`apply_sql`; a failing statement ends the session
before COMMIT, so nothing changes):

- merge: `INSERT INTO t (...) SELECT ... FROM scratch.t ON DUPLICATE KEY UPDATE`: a row
  whose natural key (the table's first UNIQUE index other than the primary key, e.g.
  `keys.key`, `torrents.info_hash`; else the primary key) exists is updated, counters
  that only grow (`MONOTONE`) to the larger of the two values (`GREATEST`), other columns
  to the snapshot's; other rows are inserted, with new ids when the id is an
  AUTO_INCREMENT column outside the natural key. Rows only in the live table stay.
- replace: `DELETE FROM t`, then every row of the snapshot, ids included.
"""

from __future__ import annotations

from dataclasses import dataclass

from trackerbackup.errors import UsageError
from trackerbackup.mysql import MysqlServer, quote_name, quote_text
from trackerbackup.mysql_critical import TableShape, read_shapes
from trackerbackup.sources.critical_restore import MONOTONE

OP = "restore critical snapshot"


@dataclass(frozen=True)
class TableMerge:
    table: str
    columns: tuple[str, ...]  # the snapshot's, all present in the live table
    key: tuple[str, ...]  # the natural key in the live table
    generated_id: str | None  # an AUTO_INCREMENT column left to the live table on merge


def merge_plan(server: MysqlServer, database: str, scratch: str,
               tables: list[str]) -> list[TableMerge]:
    saved = read_shapes(server, scratch, tuple(tables))
    live = read_shapes(server, database, tuple(tables))
    return [_table_merge(server, database, saved[t], live.get(t)) for t in tables if t in saved]


def _table_merge(server: MysqlServer, database: str, saved: TableShape,
                 live: TableShape | None) -> TableMerge:
    missing = [c for c in saved.column_names if live is None or c not in live.column_names]
    if live is None or missing:
        what = (f"table {saved.name!r}" if live is None
                else f"columns {missing} of table {saved.name!r}")
        raise UsageError(f"the live database {database} lacks {what}", op=OP,
                         hint="restore a database backup of the same tracker version first")
    key = natural_key(server, database, saved.name)
    generated = next((c.name for c in live.columns if c.auto_increment and c.name not in key),
                     None)
    return TableMerge(saved.name, tuple(saved.column_names), tuple(key), generated)


def natural_key(server: MysqlServer, database: str, table: str) -> list[str]:
    """The first UNIQUE index other than the primary key (by name), else the primary key."""
    sql = ("SELECT index_name, column_name FROM information_schema.statistics "  # noqa: S608
           f"WHERE table_schema = {quote_text(database)} AND table_name = {quote_text(table)} "
           "AND non_unique = 0 ORDER BY index_name = 'PRIMARY', index_name, seq_in_index")
    rows = server.query(sql)
    if not rows:
        raise UsageError(f"table {table!r} has neither a UNIQUE index nor a primary key to "
                         "merge rows by", op=OP, hint="restore with --replace")
    first = rows[0][0]
    return [column for index, column in rows if index == first]


def _merge_sql(merge: TableMerge, scratch: str) -> str:
    inserted = [c for c in merge.columns if c != merge.generated_id]
    names = ", ".join(quote_name(c) for c in inserted)
    target = quote_name(merge.table)

    def assignment(column: str) -> str:
        mine, theirs = f"{target}.{quote_name(column)}", f"VALUES({quote_name(column)})"
        if MONOTONE.get(merge.table) == column:
            return f"{mine} = GREATEST({mine}, {theirs})"
        return f"{mine} = {theirs}"

    updated = [c for c in inserted if c not in merge.key] or list(merge.key[:1])
    return (f"INSERT INTO {target} ({names}) SELECT {names} "  # noqa: S608
            f"FROM {quote_name(scratch)}.{target} AS saved ON DUPLICATE KEY UPDATE "
            + ", ".join(assignment(c) for c in updated))


def _replace_sql(merge: TableMerge, scratch: str) -> str:
    names = ", ".join(quote_name(c) for c in merge.columns)
    target = quote_name(merge.table)
    return (f"DELETE FROM {target};\n"  # noqa: S608
            f"INSERT INTO {target} ({names}) SELECT {names} FROM {quote_name(scratch)}.{target}")


def apply_sql(merges: list[TableMerge], scratch: str, mode: str) -> str:
    """The statements of one merge or replace, in one transaction."""
    build = _merge_sql if mode == "merge" else _replace_sql
    return ";\n".join([
        "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@sql_mode, ''), 'NO_AUTO_VALUE_ON_ZERO')",
        "START TRANSACTION", *(build(m, scratch) for m in merges), "COMMIT"]) + ";"
