"""trackerbackup/sqlite/ on real SQLite files, without concurrent processes (see
tests/integration/test_sqlite_live.py for the live writer)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import tomli_w

from trackerbackup import sqlite
from trackerbackup.errors import BackupFailed, EnvironmentProblem
from trackerbackup.sqlite import FaultPoints, SqlitePolicy, header, rollback

ROWS = 3000
FAST = SqlitePolicy(copy_rate_bytes_per_s=1e12)
SLOW = SqlitePolicy(copy_rate_bytes_per_s=1000.0)


def make_db(path: Path, journal_mode: str = "delete", rows: int = ROWS) -> Path:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.executescript(
        "CREATE TABLE torrents (id INTEGER PRIMARY KEY AUTOINCREMENT, info_hash TEXT NOT NULL "
        "UNIQUE, completed INTEGER DEFAULT 0 NOT NULL);"
        "CREATE TABLE keys (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE, "
        "valid_until INTEGER);"
    )
    connection.execute("BEGIN")
    connection.executemany("INSERT INTO torrents (info_hash, completed) VALUES (?, ?)",
                           ((f"{n:040x}", n % 3) for n in range(rows)))
    connection.executemany("INSERT INTO keys (key, valid_until) VALUES (?, ?)",
                           ((f"key{n}", n) for n in range(10)))
    connection.execute("COMMIT")
    connection.execute(f"PRAGMA journal_mode = {journal_mode}")
    connection.close()
    return path


def rows_of(path: Path) -> dict[str, list[tuple[object, ...]]]:
    connection = sqlite3.connect(path)
    try:
        return {table: connection.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
                for table in ("torrents", "keys")}
    finally:
        connection.close()


class RecordingFreezer:
    """Freezes nothing; records how often it was entered and whether it was left."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.entered = 0
        self.inside = False

    @contextmanager
    def frozen(self) -> Iterator[None]:
        self.entered += 1
        self.inside = True
        try:
            yield
        finally:
            self.inside = False


class MidCommitFreezer(RecordingFreezer):
    """During each of the first `busy_freezes` freezes a writer holds EXCLUSIVE."""

    def __init__(self, name: str, db: Path, busy_freezes: int) -> None:
        super().__init__(name)
        self.db = db
        self.busy_freezes = busy_freezes

    @contextmanager
    def frozen(self) -> Iterator[None]:
        with super().frozen():
            if self.entered > self.busy_freezes:
                yield
                return
            writer = sqlite3.connect(self.db, isolation_level=None, timeout=0)
            writer.execute("BEGIN EXCLUSIVE")
            try:
                yield
            finally:
                writer.execute("ROLLBACK")
                writer.close()


# ------------------------------------------------------------------------------ inspect


def test_inspect_reads_mode_size_and_pages_of_a_rollback_database(tmp_path: Path) -> None:
    db = make_db(tmp_path / "tracker.db")

    info = sqlite.inspect(db, FAST)

    connection = sqlite3.connect(db)
    page_count = connection.execute("PRAGMA page_count").fetchone()[0]
    connection.close()
    assert info.journal_mode == "rollback"
    assert info.size_bytes == db.stat().st_size
    assert (info.page_size, info.page_count) == (4096, page_count)
    assert info.advice == ""


def test_inspect_advises_wal_when_the_locked_copy_would_exceed_the_budget(
    tmp_path: Path,
) -> None:
    db = make_db(tmp_path / "tracker.db")

    info = sqlite.inspect(db, SLOW)

    assert info.estimated_stall_seconds == pytest.approx(db.stat().st_size / 1000.0)
    assert "switch the database to WAL" in info.advice
    assert "sqlite.max_writer_stall" in info.advice


def test_inspect_of_a_wal_database_estimates_no_stall(tmp_path: Path) -> None:
    db = make_db(tmp_path / "tracker.db", "wal")

    info = sqlite.inspect(db, SLOW)

    assert (info.journal_mode, info.estimated_stall_seconds, info.advice) == ("wal", 0.0, "")


def test_inspect_measures_a_copy_rate_when_none_is_configured(tmp_path: Path) -> None:
    db = make_db(tmp_path / "tracker.db", rows=400_000)

    info = sqlite.inspect(db)

    assert info.size_bytes > header.RATE_SAMPLE_BYTES
    assert info.copy_rate_bytes_per_s > 0
    assert info.estimated_stall_seconds == pytest.approx(
        info.size_bytes / info.copy_rate_bytes_per_s)


# ----------------------------------------------------------------------------- snapshot


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_snapshot_is_a_verified_private_copy(tmp_path: Path, journal_mode: str) -> None:
    db = make_db(tmp_path / "tracker.db", journal_mode)
    dest = tmp_path / "snapshot.db"

    report = sqlite.snapshot(db, dest, FAST, None)

    assert rows_of(dest) == rows_of(db)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert report.integrity == "ok"
    assert report.table_rows == {"keys": 10, "torrents": ROWS}
    assert report.journal_mode == ("wal" if journal_mode == "wal" else "rollback")
    assert report.strategy == ("wal-pinned-copy" if journal_mode == "wal" else "locked-copy")
    assert report.size_bytes == dest.stat().st_size == report.page_count * report.page_size
    assert report.freeze_seconds == 0.0


def test_snapshot_of_wal_includes_commits_not_yet_checkpointed(tmp_path: Path) -> None:
    db = make_db(tmp_path / "tracker.db", "wal")
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute("INSERT INTO keys (key, valid_until) VALUES ('only-in-wal', 1)")
    dest = tmp_path / "snapshot.db"

    report = sqlite.snapshot(db, dest, FAST, None)
    writer.close()

    assert report.table_rows["keys"] == 11
    assert rows_of(dest) == rows_of(db)


def test_snapshot_of_a_wal_database_at_rest_leaves_no_wal_files(tmp_path: Path) -> None:
    db = make_db(tmp_path / "tracker.db", "wal")
    before = sorted(os.listdir(tmp_path))

    sqlite.snapshot(db, tmp_path / "snapshot.db", FAST, None)

    assert sorted(os.listdir(tmp_path)) == sorted([*before, "snapshot.db"])


def test_snapshot_manifest_is_toml(tmp_path: Path) -> None:
    db = make_db(tmp_path / "tracker.db")

    manifest = sqlite.snapshot(db, tmp_path / "snapshot.db", FAST, None).to_manifest()

    text = tomli_w.dumps({"source": manifest})
    assert 'strategy = "locked-copy"' in text
    assert manifest["table_rows"] == {"keys": 10, "torrents": ROWS}


# ---------------------------------------------------------------------------- budget


def test_over_budget_with_fail_policy_raises_and_names_the_keys(tmp_path: Path) -> None:
    db = make_db(tmp_path / "tracker.db")
    dest = tmp_path / "snapshot.db"
    policy = SqlitePolicy(copy_rate_bytes_per_s=1000.0, over_budget="fail")

    with pytest.raises(EnvironmentProblem) as caught:
        sqlite.snapshot(db, dest, policy, RecordingFreezer)

    assert "sqlite.over_budget" in str(caught.value)
    assert "sqlite.max_writer_stall" in str(caught.value)
    assert "WAL" in str(caught.value)
    assert not dest.exists()


@pytest.mark.parametrize(("over_budget", "strategy"), [
    ("pause", "locked-copy-paused"),
    ("stop", "locked-copy-stopped"),
])
def test_over_budget_copies_while_frozen(tmp_path: Path, over_budget: str,
                                         strategy: str) -> None:
    db = make_db(tmp_path / "tracker.db")
    freezers: list[RecordingFreezer] = []

    def factory(name: str) -> RecordingFreezer:
        freezers.append(RecordingFreezer(name))
        return freezers[-1]

    policy = SqlitePolicy(copy_rate_bytes_per_s=1000.0,
                          over_budget=over_budget)  # type: ignore[arg-type]
    report = sqlite.snapshot(db, tmp_path / "snapshot.db", policy, factory)

    assert [f.name for f in freezers] == [over_budget]
    assert freezers[0].entered == 1
    assert not freezers[0].inside
    assert report.strategy == strategy
    assert report.freeze_seconds > 0
    # Held only while the (instant) freeze takes effect, far below the estimated stall.
    assert report.lock_held_seconds < 0.5
    assert report.estimated_stall_seconds == pytest.approx(db.stat().st_size / 1000.0)


def test_copy_overrunning_the_budget_releases_the_lock_and_pauses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Abandoned between chunks: chunk by chunk even where the file system clones files
    (a reflink on XFS or btrfs copies in one call, with no chunk to check after)."""
    db = make_db(tmp_path / "tracker.db")
    freezer = RecordingFreezer("pause")
    # The estimate fits, the real copy cannot: it is abandoned after its first chunk.
    monkeypatch.setattr(rollback, "WRITER_WAKE_UP_SLACK", 0.0)
    policy = SqlitePolicy(max_writer_stall=1e-9, copy_rate_bytes_per_s=1e18)

    report = sqlite.snapshot(db, tmp_path / "snapshot.db", policy, lambda name: freezer,
                             faults=FaultPoints(reflink=False))

    assert report.strategy == "locked-copy-paused"
    assert freezer.entered == 1
    assert report.lock_held_seconds > 0


def test_over_budget_without_a_container_copies_under_the_lock(tmp_path: Path) -> None:
    db = make_db(tmp_path / "tracker.db")

    report = sqlite.snapshot(db, tmp_path / "snapshot.db", SLOW, None)

    assert (report.strategy, report.freeze_seconds) == ("locked-copy", 0.0)


STOP = SqlitePolicy(copy_rate_bytes_per_s=1000.0, over_budget="stop")


def test_a_lock_held_through_the_stop_window_is_retried(tmp_path: Path) -> None:
    db = make_db(tmp_path / "tracker.db")
    freezer = MidCommitFreezer("stop", db, busy_freezes=2)

    report = sqlite.snapshot(db, tmp_path / "snapshot.db", STOP, lambda name: freezer)

    assert freezer.entered == 3
    assert not freezer.inside
    assert report.strategy == "locked-copy-stopped"
    assert rows_of(tmp_path / "snapshot.db") == rows_of(db)


def test_a_lock_held_through_every_stop_window_gives_a_clear_error(tmp_path: Path) -> None:
    db = make_db(tmp_path / "tracker.db")
    freezer = MidCommitFreezer("stop", db, busy_freezes=100)

    with pytest.raises(EnvironmentProblem, match="held the database lock"):
        sqlite.snapshot(db, tmp_path / "snapshot.db", STOP, lambda name: freezer)

    assert freezer.entered == rollback.FROZEN_ATTEMPTS
    assert not freezer.inside
    assert not (tmp_path / "snapshot.db").exists()


def test_a_writer_holding_the_lock_longer_than_the_retries_fails_clearly(
    tmp_path: Path,
) -> None:
    db = make_db(tmp_path / "tracker.db")
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(EnvironmentProblem, match="stayed locked"):
            sqlite.snapshot(db, tmp_path / "snapshot.db", FAST, None)
    finally:
        writer.execute("ROLLBACK")
        writer.close()


# ------------------------------------------------------------------------------ errors


def test_missing_database_names_the_path_and_the_config_keys(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "tracker.db"

    with pytest.raises(EnvironmentProblem) as caught:
        sqlite.snapshot(missing, tmp_path / "snapshot.db", FAST, None)

    assert caught.value.path == str(missing)
    assert "does not exist" in str(caught.value)
    assert "sqlite.host_path" in str(caught.value)
    assert "sqlite.path_in_container" in str(caught.value)


def test_a_file_that_is_not_a_database_is_an_environment_problem(tmp_path: Path) -> None:
    not_db = tmp_path / "tracker.db"
    not_db.write_text("tracker = 'config, not a database'\n" * 10)

    with pytest.raises(EnvironmentProblem, match="not an SQLite database"):
        sqlite.inspect(not_db)


def test_a_directory_is_not_readable_as_a_database(tmp_path: Path) -> None:
    with pytest.raises(EnvironmentProblem, match="cannot read") as caught:
        sqlite.snapshot(tmp_path, tmp_path / "snapshot.db", FAST, None)

    assert "sqlite.host_path" in str(caught.value)


def overwrite_middle_pages(db: Path, pages: int = 4) -> None:
    page_size = 4096
    total = db.stat().st_size // page_size
    with open(db, "r+b") as file:
        for page in range(total // 2, total // 2 + pages):
            file.seek(page * page_size)
            file.write(bytes(range(256)) * (page_size // 256))


@pytest.mark.parametrize(("integrity_check", "pragma"), [("full", "integrity_check"),
                                                        ("quick", "quick_check")])
def test_corrupt_pages_fail_the_verification(tmp_path: Path, integrity_check: str,
                                             pragma: str) -> None:
    db = make_db(tmp_path / "tracker.db")
    corrupt = tmp_path / "corrupt.db"
    shutil.copyfile(db, corrupt)
    overwrite_middle_pages(corrupt)
    dest = tmp_path / "snapshot.db"
    policy = SqlitePolicy(copy_rate_bytes_per_s=1e12,
                          integrity_check=integrity_check)  # type: ignore[arg-type]

    with pytest.raises(BackupFailed) as caught:
        sqlite.snapshot(corrupt, dest, policy, None)

    assert pragma in str(caught.value)
    assert "the source database may be corrupt" in str(caught.value)
    assert not dest.exists()


def test_verify_accepts_a_sound_database_and_counts_every_table(tmp_path: Path) -> None:
    db = make_db(tmp_path / "tracker.db")

    checked = sqlite.verify_snapshot(db)

    assert checked.table_rows == {"keys": 10, "torrents": ROWS}


# -------------------------------------------------------------------------- enable_wal


def test_enable_wal_switches_the_mode_while_frozen(tmp_path: Path) -> None:
    db = make_db(tmp_path / "tracker.db")
    freezer = RecordingFreezer("stop")

    sqlite.enable_wal(db, freezer)

    assert sqlite.inspect(db, FAST).journal_mode == "wal"
    assert freezer.entered == 1
    assert sorted(os.listdir(tmp_path)) == ["tracker.db"]
    assert rows_of(db)["keys"][0][1] == "key0"


def test_enable_wal_on_a_wal_database_changes_nothing(tmp_path: Path) -> None:
    db = make_db(tmp_path / "tracker.db", "wal")
    freezer = RecordingFreezer("stop")

    sqlite.enable_wal(db, freezer)

    assert freezer.entered == 0
