"""Merging and replacing a critical snapshot into a live database (apply_snapshot), on
real SQLite files: what each mode keeps, and that a failure changes nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.testbed.tree import create_sqlite_db
from trackerbackup.errors import UsageError
from trackerbackup.rowfilter import Selection, parse
from trackerbackup.sources.critical_restore import apply_snapshot, natural_key
from trackerbackup.sqlite.connection import connect
from trackerbackup.sqlite.filtered import filtered_copy

SELECTION = Selection(("keys", "whitelist", "torrent_aggregate_metrics", "torrents"),
                      (parse("torrents.completed > 0"),))


def execute(db: Path, *statements: str) -> None:
    with sqlite3.connect(db) as connection:
        for statement in statements:
            connection.execute(statement)


def table(db: Path, sql: str) -> dict[object, object]:
    with sqlite3.connect(db) as connection:
        return dict(connection.execute(sql).fetchall())


@pytest.fixture
def snapshot_and_live(tmp_path: Path) -> tuple[Path, Path]:
    """A critical snapshot of a tracker database, and the live database after it moved on
    in every way a merge must handle."""
    live = tmp_path / "tracker.db"
    create_sqlite_db(live, 2000, seed=1, journal_mode="delete")
    snapshot = tmp_path / "critical.db"
    filtered_copy(lambda: connect(live), live, snapshot, SELECTION)
    execute(live,
            "UPDATE torrents SET completed = 0 WHERE id % 2 = 0",  # lost counts
            "UPDATE torrents SET completed = completed + 100 WHERE id = 1",  # counted on
            "DELETE FROM keys WHERE id <= 3",  # lost keys
            "UPDATE keys SET valid_until = 1 WHERE id = 4",
            "INSERT INTO keys (key, valid_until) VALUES ('only-live', 7)",
            "DELETE FROM whitelist WHERE id <= 5",
            "UPDATE torrent_aggregate_metrics SET value = 999999")
    return snapshot, live


def test_merge_upserts_and_takes_the_larger_count(snapshot_and_live: tuple[Path, Path]) -> None:
    snapshot, live = snapshot_and_live
    before = table(live, "SELECT info_hash, completed FROM torrents")
    saved = table(snapshot, "SELECT info_hash, completed FROM torrents")

    counts = apply_snapshot(snapshot, live, "merge")

    after = table(live, "SELECT info_hash, completed FROM torrents")
    assert after == {h: max(c, saved.get(h, 0)) for h, c in before.items()}  # type: ignore[call-overload]
    assert counts["torrents"] == 2000  # rows only in the live table stay
    assert table(live, "SELECT key, valid_until FROM keys") == {
        **table(snapshot, "SELECT key, valid_until FROM keys"), "only-live": 7}
    assert table(live, "SELECT info_hash, id FROM whitelist").keys() == table(
        snapshot, "SELECT info_hash, id FROM whitelist").keys()
    assert table(live, "SELECT metric_name, value FROM torrent_aggregate_metrics") == {
        "torrents_downloads_total": 999999}  # a counter never goes down
    with sqlite3.connect(live) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_replace_makes_the_tables_the_snapshots(snapshot_and_live: tuple[Path, Path]) -> None:
    snapshot, live = snapshot_and_live

    counts = apply_snapshot(snapshot, live, "replace")

    for name in SELECTION.tables:
        sql = f"SELECT * FROM {name} ORDER BY id"
        with sqlite3.connect(live) as restored, sqlite3.connect(snapshot) as saved:
            assert restored.execute(sql).fetchall() == saved.execute(sql).fetchall(), name
    assert counts["torrents"] == len(table(snapshot, "SELECT id, 1 FROM torrents")) < 2000


def test_a_table_the_live_database_lacks_changes_nothing(
    snapshot_and_live: tuple[Path, Path],
) -> None:
    snapshot, live = snapshot_and_live
    execute(live, "ALTER TABLE whitelist RENAME TO whitelist_old")
    before = table(live, "SELECT info_hash, completed FROM torrents")

    with pytest.raises(UsageError, match="the live database lacks table 'whitelist'"):
        apply_snapshot(snapshot, live, "merge")

    assert table(live, "SELECT info_hash, completed FROM torrents") == before


def test_the_natural_key_is_the_unique_constraint_else_the_primary_key(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    execute(db, "CREATE TABLE a (id INTEGER PRIMARY KEY, name TEXT UNIQUE, n INTEGER)",
            "CREATE TABLE b (id INTEGER PRIMARY KEY, seq INTEGER)",
            "CREATE TABLE c (x TEXT, y TEXT)")
    with sqlite3.connect(db) as connection:
        assert natural_key(connection, "a") == (["name"], "id")
        assert natural_key(connection, "b") == (["id"], "id")
        with pytest.raises(UsageError, match="restore with --replace"):
            natural_key(connection, "c")
