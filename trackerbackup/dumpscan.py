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
# A quoted string, backslash escapes inside (the unrolled form: several times faster).
_STRING = re.compile(rb"'[^'\\]*(?:\\.[^'\\]*)*'")
_HEADER = re.compile(rb"^(INSERT INTO|CREATE TABLE) `((?:[^`]|``)*)`", re.MULTILINE)
_TAIL_BYTES = 512


class DumpScanner:
    """Feed it the dump's chunks in order; then read `table_rows` and `trailer`."""

    def __init__(self) -> None:
        self.table_rows: dict[str, int] = {}
        self._inserting: str | None = None  # the table of an INSERT running past a block
        self._carry = b""
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        self._tail = (self._tail + chunk)[-_TAIL_BYTES:]
        cut = chunk.rfind(b"\n")
        if cut == -1:
            self._carry += chunk
            return
        block = self._carry + chunk[:cut + 1]
        self._carry = chunk[cut + 1:]
        self._scan(_STRING.sub(b"''", block))  # whole lines: no string is cut in two

    def _scan(self, block: bytes) -> None:
        """Count the rows of `block` (strings already cut out, so every `;` ends a
        statement and every `(` inside an INSERT opens a row)."""
        position = 0
        if self._inserting is not None:
            position = self._count_until_end(self._inserting, block, 0)
        for header in _HEADER.finditer(block, position):
            if header.start() < position:
                continue  # inside the INSERT just counted
            table = header.group(2).replace(b"``", b"`").decode("utf-8", "replace")
            if header.group(1) == b"CREATE TABLE":
                self.table_rows.setdefault(table, 0)
            else:
                position = self._count_until_end(table, block, header.end())

    def _count_until_end(self, table: str, block: bytes, start: int) -> int:
        end = block.find(b";", start)
        stop = len(block) if end == -1 else end
        self.table_rows[table] = self.table_rows.get(table, 0) + block.count(b"(", start, stop)
        self._inserting = table if end == -1 else None
        return stop

    @property
    def trailer(self) -> str | None:
        """The dump tool's last line if it is its `-- Dump completed` trailer."""
        lines = self._tail.rstrip(b"\n").rsplit(b"\n", 1)
        last = lines[-1]
        if not last.startswith(TRAILER):
            return None
        return last.decode("utf-8", "replace")

