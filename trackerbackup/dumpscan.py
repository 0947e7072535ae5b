"""Reading a mysqldump/mariadb-dump stream as it passes: rows per table and the trailer.

The dump is SQL text: `CREATE TABLE `t` (` opens a table, `INSERT INTO `t` VALUES` starts
a statement carrying its rows, either on the same line (mysqldump: ` (...),(...);`) or one
row per line (mariadb-dump 10.11+: `VALUES` ends its line, each row starts one with `(`).
A string never spans lines (the dump escapes newlines), so the first `;` that ends a line
ends the statement, and in the one-row-per-line form every line start `(` is a row. On one
line, outside strings a row's values are literals (numbers, NULL, hex with --hex-blob), so
once strings are cut out, each `(` opens one row. Every step is a bytes method (C speed):
lines without a backslash hold no escaped quote, so splitting at `'` separates strings
from the rest; lines with one take the escape-aware regex. Memory stays within one line.
"""

from __future__ import annotations

import re

TRAILER = b"-- Dump completed"
# A quoted string, backslash escapes inside (the unrolled form: several times faster).
_STRING = re.compile(rb"'[^'\\]*(?:\\.[^'\\]*)*'")
_NAME = rb"`((?:[^`]|``)*)`"
_HEADER = re.compile(rb"^(?:CREATE TABLE " + _NAME + rb"|INSERT INTO " + _NAME +
                     rb"(?: \((?:`(?:[^`]|``)*`(?:, ?)?)*\))? VALUES(\n?))", re.MULTILINE)
_TAIL_BYTES = 512


def rows_on_one_line(text: bytes) -> int:
    """The rows of `(...),(...)` values (whole strings only): `(` outside strings."""
    if b"'" not in text:
        return text.count(b"(")
    if b"\\" not in text:  # no escaped quote: every `'` opens or closes a string
        return b"".join(text.split(b"'")[::2]).count(b"(")
    return _STRING.sub(b"", text).count(b"(")


class DumpScanner:
    """Feed it the dump's chunks in order; then read `table_rows` and `trailer`."""

    def __init__(self) -> None:
        self.table_rows: dict[str, int] = {}
        self._inserting: str | None = None  # the table of an INSERT running past a block
        self._row_per_line = False
        self._pending: list[bytes] = []  # the start of an unfinished line
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        self._tail = (self._tail + chunk[-_TAIL_BYTES:])[-_TAIL_BYTES:]
        cut = chunk.rfind(b"\n")
        if cut == -1:
            if chunk:
                self._pending.append(chunk)
            return
        if self._pending:
            block, end = b"".join((*self._pending, chunk[:cut + 1])), None
            self._pending = []
        else:
            block, end = chunk, cut + 1  # no copy: the scan stops at `end`
        if cut + 1 < len(chunk):
            self._pending.append(chunk[cut + 1:])
        self._scan(block, len(block) if end is None else end)

    def _scan(self, block: bytes, end: int) -> None:
        """Count the rows of `block[:end]`, whole lines."""
        position = 0
        while position < end:
            if self._inserting is None:
                header = _HEADER.search(block, position, end)
                if header is None:
                    return
                position = header.end()
                created, inserted = header.group(1), header.group(2)
                if created is not None:
                    self.table_rows.setdefault(_table(created), 0)
                    continue
                self._inserting = _table(inserted)
                self._row_per_line = header.group(3) == b"\n"
                position -= self._row_per_line  # from the `\n` before the first row
                self.table_rows.setdefault(self._inserting, 0)
            position = self._count_until_end(block, position, end)

    def _count_until_end(self, block: bytes, start: int, end: int) -> int:
        assert self._inserting is not None
        found = block.find(b";\n", start, end)
        stop = end if found == -1 else found + 1
        if self._row_per_line:
            rows = block.count(b"\n(", start, stop)
            if start == 0 and block.startswith(b"("):  # a block starts on a line start
                rows += 1
        else:
            rows = rows_on_one_line(block[start:stop])
        self.table_rows[self._inserting] += rows
        if found != -1:
            self._inserting = None
        return stop

    @property
    def trailer(self) -> str | None:
        """The dump tool's last line if it is its `-- Dump completed` trailer."""
        lines = self._tail.rstrip(b"\n").rsplit(b"\n", 1)
        last = lines[-1]
        if not last.startswith(TRAILER):
            return None
        return last.decode("utf-8", "replace")


def _table(quoted: bytes) -> str:
    return quoted.replace(b"``", b"`").decode("utf-8", "replace")
