"""Reading a mysqldump/mariadb-dump stream as it passes: rows per table and the trailer.

The dump is SQL text: `CREATE TABLE `t` (` opens a table, `INSERT INTO `t` VALUES` starts
a statement carrying its rows, on the same line (mysqldump: `(...),(...);`) or one row
per line (mariadb-dump 10.11+), up to the `;` that ends it. A string never spans lines
(the dump escapes newlines), and outside strings a row's values are literals (numbers,
NULL, hex with --hex-blob), so once strings are cut out, each `(` opens one row. Memory
stays within one dump line.
"""

from __future__ import annotations

import re

TRAILER = b"-- Dump completed"
_STRING = re.compile(rb"'(?:[^'\\]|\\.)*'", re.DOTALL)
_CREATE = b"CREATE TABLE `"
_INSERT = b"INSERT INTO `"
_TAIL_BYTES = 512


class DumpScanner:
    """Feed it the dump's chunks in order; then read `table_rows` and `trailer`."""

    def __init__(self) -> None:
        self.table_rows: dict[str, int] = {}
        self._inserting: str | None = None  # the table of the INSERT statement being read
        self._carry = b""
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        self._tail = (self._tail + chunk)[-_TAIL_BYTES:]
        if b"\n" not in chunk:
            self._carry += chunk
            return
        lines = (self._carry + chunk).split(b"\n")
        self._carry = lines.pop()
        for line in lines:
            if line.startswith(_INSERT):
                self._inserting = _name(line, len(_INSERT))
                self._count(self._inserting, line[line.index(b"VALUES", len(_INSERT)):])
            elif self._inserting is not None:
                self._count(self._inserting, line)
            elif line.startswith(_CREATE):
                self.table_rows.setdefault(_name(line, len(_CREATE)), 0)

    def _count(self, table: str, values: bytes) -> None:
        literals = _STRING.sub(b"''", values)
        self.table_rows[table] = self.table_rows.get(table, 0) + literals.count(b"(")
        if literals.rstrip().endswith(b";"):
            self._inserting = None

    @property
    def trailer(self) -> str | None:
        """The dump tool's last line if it is its `-- Dump completed` trailer."""
        lines = self._tail.rstrip(b"\n").rsplit(b"\n", 1)
        last = lines[-1]
        if not last.startswith(TRAILER):
            return None
        return last.decode("utf-8", "replace")


def _name(line: bytes, start: int) -> str:
    end = line.find(b"`", start)
    while end != -1 and line[end + 1:end + 2] == b"`":  # `` is a quoted backtick
        end = line.find(b"`", end + 2)
    return line[start:end].replace(b"``", b"`").decode("utf-8", "replace")
