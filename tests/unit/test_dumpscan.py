"""Row counts and the trailer, read from both dump dialects as they stream past."""

from __future__ import annotations

import random

from trackerbackup.dumpscan import DumpScanner, rows_on_one_line

MYSQLDUMP = b"""-- MySQL dump 10.13
CREATE TABLE `torrents` (
  `id` int NOT NULL
) ENGINE=InnoDB;
INSERT INTO `torrents` VALUES (1,'a),(b'),(2,'it\\'s (x)'),(3,NULL);
CREATE TABLE `empty` (
  `id` int NOT NULL
) ENGINE=InnoDB;
CREATE TABLE `we``ird` (`id` int);
INSERT INTO `we``ird` VALUES (1);
-- Dump completed on 2026-11-26 11:22:21
"""

MARIADB_DUMP = b"""/*M!999999\\- enable the sandbox mode */
CREATE TABLE `keys` (
  `id` int(11) NOT NULL
) ENGINE=InnoDB;
INSERT INTO `keys` VALUES
(1,'k1',0x00FF),
(2,'(,),(',NULL),
(3,'k3',NULL);
INSERT INTO `keys` VALUES
(4,'k4',NULL);
-- Dump completed on 2026-11-26 11:22:21
"""


def scan(data: bytes, chunk: int) -> DumpScanner:
    scanner = DumpScanner()
    for start in range(0, len(data), chunk):
        scanner.feed(data[start:start + chunk])
    return scanner


def test_mysqldump_extended_inserts_are_counted_whatever_the_chunking() -> None:
    for chunk in (1, 7, 64, 1 << 20):
        scanner = scan(MYSQLDUMP, chunk)
        assert scanner.table_rows == {"torrents": 3, "empty": 0, "we`ird": 1}
        assert scanner.trailer == "-- Dump completed on 2026-11-26 11:22:21"


def test_mariadb_dump_one_row_per_line_is_counted() -> None:
    scanner = scan(MARIADB_DUMP, 5)
    assert scanner.table_rows == {"keys": 4}
    assert scanner.trailer is not None


def test_a_dump_cut_short_has_no_trailer() -> None:
    cut = MYSQLDUMP[:MYSQLDUMP.index(b"-- Dump completed")]
    assert scan(cut, 64).trailer is None
    assert scan(MYSQLDUMP + b"INSERT INTO `x` VALUES (1);\n", 64).trailer is None


def test_strings_with_row_separators_quotes_and_backslashes() -> None:
    # No quote at all, quotes without a backslash, and backslash escapes: all three paths.
    assert rows_on_one_line(b" (1,2),(3,NULL),(4,0x28293B);") == 3
    assert rows_on_one_line(b" (1,'a),(b'),(2,''),(3,'(('),(4,'x;y');") == 4
    assert rows_on_one_line(b" (1,'it\\'s),('),(2,'\\\\'),(3,'\\\\\\'),(');") == 3


def escape(text: str) -> bytes:
    """A string literal as both dump tools write it (mysql_real_escape_string)."""
    table = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\0": "\\0", '"': '\\"'}
    return ("'" + "".join(table.get(c, c) for c in text) + "'").encode()


def dump(rows: list[tuple[int, str]], row_per_line: bool) -> bytes:
    values = [b"(%d,%s,NULL)" % (n, escape(text)) for n, text in rows]
    if row_per_line:
        body = b"INSERT INTO `t` VALUES\n" + b",\n".join(values) + b";\n"
    else:
        body = b"INSERT INTO `t` VALUES " + b",".join(values) + b";\n"
    return (b"CREATE TABLE `t` (\n  `id` int\n) ENGINE=InnoDB;\n" + body
            + b"CREATE TABLE `u` (`id` int);\n-- Dump completed on 2026-11-26 12:00:00\n")


def test_random_strings_in_both_dialects_and_any_chunking() -> None:
    alphabet = "ab(),;'\\\n\"`x "
    generator = random.Random(11)
    for _ in range(200):
        rows = [(n, "".join(generator.choice(alphabet) for _ in range(generator.randrange(12))))
                for n in range(generator.randrange(1, 30))]
        for row_per_line in (True, False):
            data = dump(rows, row_per_line)
            scanner = scan(data, generator.choice((1, 3, 17, 100, 1 << 20)))
            assert scanner.table_rows == {"t": len(rows), "u": 0}, data
            assert scanner.trailer is not None


def test_inserts_with_a_column_list_count_rows_not_columns() -> None:
    data = (b"INSERT INTO `t` (`id`, `we)ird`) VALUES (1,'a'),(2,'b');\n"
            b"-- Dump completed on 2026-11-26 12:00:00\n")
    assert scan(data, 4).table_rows == {"t": 2}
