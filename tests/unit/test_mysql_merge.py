"""The statements of a MySQL critical merge or replace (run on the live server by
tests/e2e/test_critical_mysql.py)."""

from __future__ import annotations

from trackerbackup.mysql_merge import TableMerge, apply_sql

TORRENTS = TableMerge("torrents", ("id", "info_hash", "completed"), ("info_hash",), "id")
SEQ = TableMerge("_testbed_seq", ("id", "seq"), ("id",), None)


def test_a_merge_upserts_by_the_natural_key_and_never_lowers_a_count() -> None:
    statements = apply_sql([TORRENTS, SEQ], "scratch", "merge").split(";\n")

    assert statements[1] == "START TRANSACTION"
    assert statements[2] == (
        "INSERT INTO `torrents` (`info_hash`, `completed`) SELECT `info_hash`, `completed` "
        "FROM `scratch`.`torrents` AS saved ON DUPLICATE KEY UPDATE "
        "`torrents`.`completed` = GREATEST(`torrents`.`completed`, VALUES(`completed`))")
    assert statements[3].endswith("ON DUPLICATE KEY UPDATE `_testbed_seq`.`seq` = VALUES(`seq`)")
    assert statements[4] == "COMMIT;"


def test_a_replace_empties_each_table_and_copies_it_ids_included() -> None:
    statements = apply_sql([TORRENTS], "scratch", "replace").split(";\n")

    assert statements[2:] == [
        "DELETE FROM `torrents`",
        "INSERT INTO `torrents` (`id`, `info_hash`, `completed`) SELECT `id`, `info_hash`, "
        "`completed` FROM `scratch`.`torrents`", "COMMIT;"]
