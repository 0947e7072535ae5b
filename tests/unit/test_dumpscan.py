"""Row counts and the trailer, read from both dump dialects as they stream past."""

from __future__ import annotations

from trackerbackup.dumpscan import DumpScanner

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
