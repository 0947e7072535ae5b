"""Snapshots of a live SQLite database while a tracker-like writer commits every ~5 ms.

The database and the writer are the test bed's (tests/testbed/tree.py, writer.py), the
writer running as a local process (tests/kit/local_tracker.py). Every snapshot must pass
integrity_check and equal the initial database with exactly the writer's first N
committed transactions applied (N read from the snapshot's `_testbed_seq`), and the
writer must lose no write, during the snapshot or after it.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import pytest

from tests.kit.local_tracker import LocalWriter, SignalFreezer, is_stopped
from tests.testbed.prefix import assert_prefix_consistent
from tests.testbed.tree import TRACKER_UID, chown_tree, create_sqlite_db
from trackerbackup import sqlite
from trackerbackup.errors import EnvironmentProblem
from trackerbackup.sqlite import FaultPoints, SnapshotReport, SqlitePolicy

SMALL = 2_000
MEDIUM = 300_000
RUNS = 3
TRACKER_BUSY_TIMEOUT_MS = 5000
# The copy is abandoned between chunks once over budget: one chunk of slack.
CHUNK_SLACK = 0.5


def tracker_database(directory: Path, rows: int, journal_mode: str) -> Path:
    """The test bed's tracker database in `directory`, owned like the tracker's."""
    db = directory / "tracker.db"
    create_sqlite_db(db, rows, seed=1, journal_mode=journal_mode)
    chown_tree(directory, TRACKER_UID, TRACKER_UID, 0o2770)
    return db


class LiveDatabase:
    """A tracker database, a pristine copy of it, and a running writer."""

    def __init__(self, directory: Path, rows: int, journal_mode: str,
                 uid: int | None = None, wal_autocheckpoint: int | None = None) -> None:
        self.directory = directory
        self.scratch = directory.parent / f"{directory.name}-scratch"
        self.scratch.mkdir()
        self.db = tracker_database(directory, rows, journal_mode)
        self.initial = self.scratch / "initial.db"
        shutil.copyfile(self.db, self.initial)
        self.writer = LocalWriter(self.db, self.scratch / "writer", uid=uid,
                                  wal_autocheckpoint=wal_autocheckpoint)
        self.writer.wait_for_commits(20)

    def freezer_factory(self) -> Callable[[str], SignalFreezer]:
        self.freezers: list[SignalFreezer] = []

        def factory(name: str) -> SignalFreezer:
            self.freezers.append(SignalFreezer(self.writer.pid, name))
            return self.freezers[-1]

        return factory

    def assert_exact_prefix(self, snapshot: Path) -> int:
        """The snapshot equals the initial database plus committed ops 1..seq."""
        return assert_prefix_consistent(snapshot, self.initial, self.writer.oplog)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Callable[..., LiveDatabase]]:
    """`live(rows, journal_mode, uid=None, wal_autocheckpoint=None)`: a LiveDatabase in a
    new directory `lib` (where the tracker's uid can reach it when `uid` is given)."""
    started: list[LiveDatabase] = []
    # pytest's tmp_path is inside a 0700 directory the tracker's uid cannot traverse.
    traversable = Path(tempfile.mkdtemp(prefix="trackerbackup-live-"))
    traversable.chmod(0o711)

    def start(rows: int, journal_mode: str, uid: int | None = None,
              wal_autocheckpoint: int | None = None) -> LiveDatabase:
        directory = (traversable if uid is not None else tmp_path) / "lib"
        directory.mkdir()
        started.append(LiveDatabase(directory, rows, journal_mode, uid, wal_autocheckpoint))
        return started[-1]

    yield start
    for database in started:
        database.writer.kill()
    shutil.rmtree(traversable)


def assert_no_write_lost(database: LiveDatabase) -> None:
    database.writer.wait_for_commits(database.writer.committed() + 20)
    status = database.writer.stop()
    assert status["failed"] == 0, status["errors"]
    assert status["max_stall_ms"] < TRACKER_BUSY_TIMEOUT_MS


def snapshot_runs(database: LiveDatabase, policy: SqlitePolicy, runs: int = RUNS,
                  faults: FaultPoints = sqlite.NO_FAULTS) -> list[SnapshotReport]:
    reports = []
    last_seq = 0
    for run in range(runs):
        dest = database.scratch / f"snapshot-{run}.db"
        reports.append(sqlite.snapshot(database.db, dest, policy,
                                       database.freezer_factory(), faults=faults))
        seq = database.assert_exact_prefix(dest)
        assert seq > last_seq
        last_seq = seq
        dest.unlink()
    return reports


@pytest.mark.slow
@pytest.mark.parametrize("rows", [SMALL, MEDIUM], ids=["small", "medium"])
@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_live_snapshots_are_exact_prefixes_and_lose_no_write(
    live: Callable[..., LiveDatabase], rows: int, journal_mode: str
) -> None:
    database = live(rows, journal_mode)
    policy = SqlitePolicy(max_writer_stall=1.0)

    reports = snapshot_runs(database, policy)

    assert_no_write_lost(database)
    for report in reports:
        assert report.integrity == "ok"
        assert report.table_rows["torrents"] >= rows
        assert report.lock_held_seconds <= policy.max_writer_stall + CHUNK_SLACK
    if journal_mode == "wal":
        assert {r.strategy for r in reports} == {"wal-pinned-copy"}
        assert all(r.lock_held_seconds == 0.0 for r in reports)
    else:  # paused where the copy overran the budget (a slow disk), else under the lock
        assert [r.strategy for r in reports] == [
            "locked-copy-paused" if r.freeze_seconds > 0 else "locked-copy" for r in reports]


@pytest.mark.slow
def test_wal_copy_is_exact_while_checkpoints_and_wal_restarts_race_it(
    live: Callable[..., LiveDatabase],
) -> None:
    """A checkpoint after nearly every commit, and a copy slowed to let ~100 commits,
    checkpoints and WAL restarts happen while it runs."""
    database = live(20_000, "wal", wal_autocheckpoint=2)

    def slow_chunk(offset: int) -> None:
        time.sleep(0.015)

    slow = FaultPoints(before_db_chunk=slow_chunk, before_wal_chunk=slow_chunk,
                       chunk_bytes=64 * 1024, reflink=False)
    commits_before = database.writer.committed()

    reports = snapshot_runs(database, SqlitePolicy(), runs=5, faults=slow)

    assert database.writer.committed() - commits_before > 300
    assert all(r.copy_seconds > 0.3 for r in reports)
    assert_no_write_lost(database)


@pytest.mark.slow
def test_over_budget_pauses_the_writer_for_the_copy(
    live: Callable[..., LiveDatabase],
) -> None:
    database = live(MEDIUM, "delete")
    policy = SqlitePolicy(max_writer_stall=1e-6, copy_rate_bytes_per_s=1e6)

    reports = snapshot_runs(database, policy)

    assert {r.strategy for r in reports} == {"locked-copy-paused"}
    assert all(f.times_frozen >= 1 for f in database.freezers)
    assert all(r.freeze_seconds > 0 for r in reports)
    assert not is_stopped(database.writer.pid)
    assert_no_write_lost(database)


@pytest.mark.slow
def test_the_writer_runs_again_when_the_copy_fails_while_paused(
    live: Callable[..., LiveDatabase],
) -> None:
    database = live(MEDIUM, "delete")
    policy = SqlitePolicy(max_writer_stall=1e-6, copy_rate_bytes_per_s=1e6)
    dest = database.scratch / "snapshot.db"

    def disk_full(offset: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(EnvironmentProblem, match="No space left"):
        sqlite.snapshot(database.db, dest, policy, database.freezer_factory(),
                        faults=FaultPoints(before_db_chunk=disk_full, reflink=False))

    assert database.freezers[0].times_frozen == 1
    assert not is_stopped(database.writer.pid)
    assert not dest.exists()
    assert_no_write_lost(database)


@pytest.mark.slow
def test_fail_policy_raises_and_leaves_the_writer_alone(
    live: Callable[..., LiveDatabase],
) -> None:
    database = live(SMALL, "delete")
    policy = SqlitePolicy(max_writer_stall=1e-6, copy_rate_bytes_per_s=1e3,
                          over_budget="fail")

    with pytest.raises(EnvironmentProblem, match="over the 1e-06 s budget"):
        sqlite.snapshot(database.db, database.scratch / "snapshot.db", policy,
                        database.freezer_factory())

    assert database.freezers == []
    assert_no_write_lost(database)


def owner_and_mode(path: Path) -> tuple[int, int, int]:
    info = path.stat()
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


def owners_and_modes(directory: Path) -> dict[str, tuple[int, int, int]]:
    """Of the directory and each file in it: only with no writer running (a live
    writer's -journal may vanish between the listing and its stat)."""
    return {path.name: owner_and_mode(path) for path in [directory, *directory.iterdir()]}


@pytest.mark.slow
@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_no_root_owned_file_is_left_in_the_trackers_directory(
    live: Callable[..., LiveDatabase], journal_mode: str
) -> None:
    """The writer runs as uid 1000 in a 1000:1000 2770 directory; the test is root."""
    database = live(SMALL, journal_mode, uid=TRACKER_UID)
    directory_before = owner_and_mode(database.directory)

    for policy in (SqlitePolicy(), SqlitePolicy(max_writer_stall=1e-6,
                                                copy_rate_bytes_per_s=1e3)):
        dest = database.scratch / "snapshot.db"
        sqlite.snapshot(database.db, dest, policy, database.freezer_factory())
        database.assert_exact_prefix(dest)
        dest.unlink()
    assert_no_write_lost(database)

    left = owners_and_modes(database.directory)
    assert left[database.directory.name] == directory_before == (TRACKER_UID, TRACKER_UID,
                                                                 0o2770)
    assert {(uid, gid) for uid, gid, _ in left.values()} == {(TRACKER_UID, TRACKER_UID)}


class NothingRunning:
    """A stop window for a database no process uses."""

    name = "stop"

    def frozen(self) -> AbstractContextManager[None]:
        return nullcontext()


@pytest.mark.slow
def test_snapshot_and_enable_wal_at_rest_leave_only_the_database(tmp_path: Path) -> None:
    directory = tmp_path / "lib"
    directory.mkdir()
    db = tracker_database(directory, SMALL, "delete")
    before = owners_and_modes(directory)

    sqlite.enable_wal(db, NothingRunning())
    sqlite.snapshot(db, tmp_path / "snapshot.db", SqlitePolicy(), None)

    assert sqlite.inspect(db).journal_mode == "wal"
    assert owners_and_modes(directory) == before
    assert before["lib"] == (TRACKER_UID, TRACKER_UID, 0o2770)
