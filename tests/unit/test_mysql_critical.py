"""The MySQL critical read's SQL and the stream that turns its rows into INSERTs (the
live server: tests/e2e/test_critical_mysql.py)."""

from __future__ import annotations

import io

import pytest

from trackerbackup.errors import BackupFailed
from trackerbackup.mysql_critical import (
    DATA_HEADER,
    DATA_TRAILER,
    ROWS_PER_INSERT,
    Column,
    InsertStatements,
    TableShape,
    read_script,
    type_problems,
    value_sql,
)
from trackerbackup.rowfilter import Selection, parse

SHAPES = {
    "keys": TableShape("keys", "InnoDB", 16384, (
        Column("id", "int", True), Column("key", "varchar", False),
        Column("valid_until", "int", False))),
    "torrents": TableShape("torrents", "InnoDB", 1 << 20, (
        Column("id", "int", True), Column("info_hash", "varchar", False),
        Column("completed", "int", False))),
}
SELECTION = Selection(("keys", "torrents"), (parse("torrents.completed > 0"),))


def test_the_read_is_one_consistent_read_only_snapshot_filtering_only_its_table() -> None:
    script = read_script(SHAPES, SELECTION)

    statements = script.split(";\n")
    assert statements[:3] == ["SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
                              "SET time_zone = '+00:00'",
                              "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"]
    assert statements[-2:] == ["COMMIT", "SELECT 'END';"]
    assert statements[4].endswith("FROM `keys`")
    assert statements[6].endswith("FROM `torrents` WHERE `completed` > 0")


def test_values_render_as_literals_without_escapes() -> None:
    assert value_sql(Column("n", "bigint", False)) == "IFNULL(CAST(`n` AS CHAR), 'NULL')"
    assert value_sql(Column("s", "varchar", False)) == (
        "IFNULL(CONCAT('X''', HEX(`s`), ''''), 'NULL')")
    assert value_sql(Column("t", "datetime", False)) == "IFNULL(QUOTE(`t`), 'NULL')"
    assert value_sql(Column("g", "geometry", False)) is None
    shapes = {"odd": TableShape("odd", "InnoDB", 0, (Column("g", "geometry", False),))}
    assert type_problems(shapes, "critical.tables") == [
        "critical.tables: column 'g' of table 'odd' has type geometry, which the critical "
        "snapshot cannot copy (numbers, strings, bytes and times only); leave the table out"]


def session_output(rows: int) -> bytes:
    lines = [b"TABLE keys", b"(1,X'6B31',NULL)", b"TABLE torrents"]
    lines += [b"(%d,X'AB',%d)" % (i, i) for i in range(1, rows + 1)]
    return b"\n".join([*lines, b"END"]) + b"\n"


@pytest.mark.parametrize("chunk", [1, 7, 1 << 16])
def test_rows_become_multi_row_inserts_counted_per_table(chunk: int) -> None:
    out = io.BytesIO()
    inserts = InsertStatements(SHAPES, out)
    data = session_output(ROWS_PER_INSERT + 5)
    for start in range(0, len(data), chunk):
        inserts.feed(data[start:start + chunk])

    assert inserts.finish() == {"keys": 1, "torrents": ROWS_PER_INSERT + 5}
    text = out.getvalue()
    assert text.startswith(DATA_HEADER)
    assert text.count(b"INSERT INTO `torrents` (`id`, `info_hash`, `completed`) VALUES\n") == 2
    assert b"INSERT INTO `keys` (`id`, `key`, `valid_until`) VALUES\n(1,X'6B31',NULL);\n" in text
    *_, commit, trailer = text.rstrip(b"\n").split(b"\n")
    assert (commit, trailer.startswith(DATA_TRAILER)) == (b"COMMIT;", True)


def test_a_session_cut_short_or_talking_nonsense_is_a_failure() -> None:
    cut = InsertStatements(SHAPES, io.BytesIO())
    cut.feed(session_output(3)[:-5])
    with pytest.raises(BackupFailed, match="ended before its last table"):
        cut.finish()
    with pytest.raises(BackupFailed, match="unexpected output"):
        InsertStatements(SHAPES, io.BytesIO()).feed(b"TABLE keys\nERROR 1054\n")
