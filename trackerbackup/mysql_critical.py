"""The critical tables of a MySQL/MariaDB tracker database, read in one consistent snapshot.

Why not one `mysqldump --single-transaction --where ...`: the dump program applies its one
`--where` to every table it dumps, and `completed > 0` is no condition on `keys` (the
server refuses it: unknown column). Two dump runs (the small tables whole, `torrents`
filtered) would be two snapshots, and a completed announce updates `torrents` and
`torrent_aggregate_metrics` in one transaction: the two could disagree.

So the rows come from one client session (`read_script`): REPEATABLE READ,
`START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY`, then one plain SELECT per table
(a consistent read: InnoDB takes no row locks for it, so the tracker's writers never
wait). Each SELECT has the server render its rows as SQL value lists (`value_sql`:
numbers as they are, strings and bytes as hex literals, times quoted), one row a line,
so the output needs no unescaping and loads into any database; `InsertStatements` groups
those lines into multi-row INSERTs. The CREATE TABLE statements come from the dump
program (`--no-data`, just before the read; the tracker does not change its schema while
running, and a column dropped in between fails the read, never silently).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from trackerbackup.errors import BackupFailed
from trackerbackup.mysql import MysqlServer, quote_name, quote_text
from trackerbackup.rowfilter import RowFilter, Selection
from trackerbackup.stream import Writable

OP = "read critical MySQL tables"
NUMERIC = frozenset({"tinyint", "smallint", "mediumint", "int", "integer", "bigint",
                     "decimal", "numeric", "float", "double", "real"})
BYTES = frozenset({"char", "varchar", "tinytext", "text", "mediumtext", "longtext", "binary",
                   "varbinary", "tinyblob", "blob", "mediumblob", "longblob", "json"})
TEMPORAL = frozenset({"date", "datetime", "timestamp", "time", "year"})
TABLE_MARK = b"TABLE "
END_MARK = b"END"
ROWS_PER_INSERT = 2000
# Loaded with autocommit off and checks as mysqldump sets them; timestamps in UTC (the
# read session renders them in UTC too).
DATA_HEADER = (b"-- trackerbackup critical snapshot: the rows, read in one consistent "
               b"snapshot\nSET sql_mode = 'NO_AUTO_VALUE_ON_ZERO', time_zone = '+00:00', "
               b"foreign_key_checks = 0, unique_checks = 0, autocommit = 0;\n")
DATA_TRAILER = b"-- trackerbackup critical snapshot completed"


@dataclass(frozen=True)
class Column:
    name: str
    data_type: str
    auto_increment: bool


@dataclass(frozen=True)
class TableShape:
    name: str
    engine: str
    data_bytes: int
    columns: tuple[Column, ...]

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]


def read_shapes(server: MysqlServer, database: str,
                tables: tuple[str, ...]) -> dict[str, TableShape]:
    """The columns (in order), engine and data size of those of `tables` the database has."""
    names = ", ".join(quote_text(table) for table in tables)
    sql = ("SELECT c.table_name, c.column_name, LOWER(c.data_type), "  # noqa: S608
           "c.extra LIKE '%auto_increment%', COALESCE(t.engine, ''), "
           "COALESCE(t.data_length, 0) FROM information_schema.columns c "
           "JOIN information_schema.tables t ON t.table_schema = c.table_schema "
           "AND t.table_name = c.table_name "
           f"WHERE c.table_schema = {quote_text(database)} AND c.table_name IN ({names}) "
           "AND t.table_type = 'BASE TABLE' ORDER BY c.table_name, c.ordinal_position")
    columns: dict[str, list[Column]] = {}
    about: dict[str, tuple[str, int]] = {}
    for table, column, data_type, auto, engine, size in server.query(sql):
        columns.setdefault(table, []).append(Column(column, data_type, auto == "1"))
        about[table] = (engine, int(size))
    return {table: TableShape(table, *about[table], tuple(cols))
            for table, cols in columns.items()}


def value_sql(column: Column) -> str | None:
    """An SQL expression rendering the column's value as an SQL literal (never NULL, no
    tab, newline or backslash); None for a type this read does not handle."""
    name = quote_name(column.name)
    if column.data_type in NUMERIC:
        literal = f"CAST({name} AS CHAR)"
    elif column.data_type in BYTES:
        literal = f"CONCAT('X''', HEX({name}), '''')"
    elif column.data_type in TEMPORAL:
        literal = f"QUOTE({name})"
    else:
        return None
    return f"IFNULL({literal}, 'NULL')"


def type_problems(shapes: Mapping[str, TableShape], tables_key: str) -> list[str]:
    return [f"{tables_key}: column {column.name!r} of table {shape.name!r} has type "
            f"{column.data_type}, which the critical snapshot cannot copy (numbers, strings, "
            "bytes and times only); leave the table out"
            for shape in shapes.values() for column in shape.columns
            if value_sql(column) is None]


def where_sql(row_filter: RowFilter | None) -> str:
    if row_filter is None:
        return ""
    # The operator is one of six and the value an integer (rowfilter.parse).
    return f" WHERE {quote_name(row_filter.column)} {row_filter.operator} {row_filter.value}"


def read_script(shapes: Mapping[str, TableShape], selection: Selection) -> str:
    """One session: a consistent, read-only snapshot, then each table's rows as lines of
    `(v1,v2,...)` after a `TABLE name` line, then `END` once the transaction committed."""
    statements = ["SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
                  "SET time_zone = '+00:00'",
                  "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"]
    for table in selection.tables:
        shape = shapes[table]
        values = ", ',', ".join(str(value_sql(column)) for column in shape.columns)
        statements.append(f"SELECT {quote_text(TABLE_MARK.decode() + table)}")
        statements.append(f"SELECT CONCAT('(', {values}, ')') "  # noqa: S608
                          f"FROM {quote_name(table)}{where_sql(selection.filter_of(table))}")
    statements += ["COMMIT", f"SELECT {quote_text(END_MARK.decode())}"]
    return ";\n".join(statements) + ";"


class InsertStatements:
    """Turns the read session's output (fed in chunks) into INSERT statements on `out`,
    counting each table's rows; `finish` raises BackupFailed unless the session ended."""

    def __init__(self, shapes: Mapping[str, TableShape], out: Writable) -> None:
        self.shapes = shapes
        self.out = out
        self.table_rows: dict[str, int] = {}
        self._table: str | None = None
        self._rows: list[bytes] = []
        self._carry = b""
        self._ended = False
        out.write(DATA_HEADER)

    def feed(self, chunk: bytes) -> None:
        *lines, self._carry = (self._carry + chunk).split(b"\n")
        for line in lines:
            if line.startswith(b"(") and self._table is not None and not self._ended:
                self._rows.append(line)
                if len(self._rows) >= ROWS_PER_INSERT:
                    self._flush()
            elif line.startswith(TABLE_MARK) and not self._ended:
                self._flush()
                self._table = line[len(TABLE_MARK):].decode()
                self.table_rows[self._table] = 0
            elif line == END_MARK:
                self._flush()
                self._ended = True
            else:
                raise BackupFailed(f"unexpected output of the read session: {line[:80]!r}",
                                   op=OP, hint="see the MySQL server's log; run again")

    def _flush(self) -> None:
        if not self._rows or self._table is None:
            return
        names = ", ".join(quote_name(name) for name in self.shapes[self._table].column_names)
        self.out.write(f"INSERT INTO {quote_name(self._table)} ({names}) VALUES\n".encode()
                       + b",\n".join(self._rows) + b";\n")
        self.table_rows[self._table] += len(self._rows)
        self._rows = []

    def finish(self) -> dict[str, int]:
        if self._carry or not self._ended:
            raise BackupFailed("the read session ended before its last table", op=OP,
                               hint="the client was interrupted; run the backup again")
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
        self.out.write(b"COMMIT;\n" + DATA_TRAILER + f" {stamp}\n".encode())
        return self.table_rows


def read_rows(server: MysqlServer, database: str, shapes: Mapping[str, TableShape],
              selection: Selection, out: Writable) -> dict[str, int]:
    """Append the selected rows, read in one consistent snapshot, to `out` as INSERTs."""
    inserts = InsertStatements(shapes, out)
    server.query_stream(read_script(shapes, selection), database, inserts.feed)
    rows = inserts.finish()
    if list(rows) != list(selection.tables):
        raise BackupFailed(f"the read session returned tables {list(rows)}, expected "
                           f"{list(selection.tables)}", op=OP, hint="run the backup again")
    return rows
