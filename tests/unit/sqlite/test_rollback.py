"""sqlite/rollback.py: the SHARED lock holds for the whole copy, so no commit lands in the
file while it is copied. A writer in another process tries to commit before every chunk.
The negative control closes a descriptor of the database inside the lock, which drops
every POSIX lock this process holds on it: the same check must then see a commit."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.unit.sqlite.scripted_writer import ScriptedWriter, commits_in
from trackerbackup import sqlite
from trackerbackup.errors import BackupFailed, EnvironmentProblem
from trackerbackup.sqlite import FaultPoints, SqlitePolicy

CHUNK = 16 * 1024
# The estimate always fits and the budget is never overrun: a plain locked copy.
LOCKED = SqlitePolicy(max_writer_stall=60.0, copy_rate_bytes_per_s=1e12,
                      integrity_check="quick")


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[ScriptedWriter]:
    scripted = ScriptedWriter(tmp_path / "tracker.db", "delete")
    scripted.commit(80)
    yield scripted
    scripted.close()


def copy_while_trying_to_commit(writer: ScriptedWriter, db: Path, dest: Path,
                                inside_lock: Callable[[], None], answers: list[str]) -> None:
    """Before every chunk, `inside_lock` runs, then the writer tries to commit."""

    def before_chunk(offset: int) -> None:
        inside_lock()
        answers.append(writer.send("try-commit"))

    faults = FaultPoints(before_db_chunk=before_chunk, chunk_bytes=CHUNK, reflink=False)
    report = sqlite.snapshot(db, dest, LOCKED, None, faults=faults)
    assert report.strategy == "locked-copy"


def test_no_commit_lands_while_the_file_is_copied(writer: ScriptedWriter,
                                                  tmp_path: Path) -> None:
    db = tmp_path / "tracker.db"
    before = writer.committed

    answers: list[str] = []
    copy_while_trying_to_commit(writer, db, tmp_path / "snap.db", lambda: None, answers)

    assert len(answers) == -(-db.stat().st_size // CHUNK) > 10
    assert all(answer.startswith("busy database is locked") for answer in answers), answers
    assert commits_in(tmp_path / "snap.db") == before
    writer.commit(1)  # and the writer goes on once the lock is gone
    assert writer.committed == before + 1


def test_negative_control_a_descriptor_closed_inside_the_lock_lets_commits_in(
    writer: ScriptedWriter, tmp_path: Path
) -> None:
    db = tmp_path / "tracker.db"

    def open_and_close_the_database() -> None:
        os.close(os.open(db, os.O_RDONLY))

    answers: list[str] = []
    # The copy may also come out torn and fail its check: either way the lock was lost.
    with contextlib.suppress(BackupFailed):
        copy_while_trying_to_commit(writer, db, tmp_path / "snap.db",
                                    open_and_close_the_database, answers)

    assert any(answer.startswith("commits ") for answer in answers), answers


def test_a_writer_that_spills_its_cache_waits_for_the_copy(writer: ScriptedWriter,
                                                           tmp_path: Path) -> None:
    """A transaction larger than the writer's cache must write the database file before
    COMMIT; it needs the EXCLUSIVE lock for that, so it waits for our SHARED lock."""
    db = tmp_path / "tracker.db"
    before = writer.committed
    started = False

    def spill_once(offset: int) -> None:
        nonlocal started
        if not started:
            started = True
            writer.send_no_wait("spill 10000")  # blocks in the child until we release

    sqlite.snapshot(db, tmp_path / "snap.db", LOCKED, None,
                    faults=FaultPoints(before_db_chunk=spill_once, chunk_bytes=CHUNK,
                                       reflink=False))

    assert writer.answer() == "spilled"
    assert commits_in(tmp_path / "snap.db") == before
    assert writer.send("rollback") == "rolled back"


def test_a_hot_journal_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "tracker.db"
    crashing = ScriptedWriter(db, "delete")
    crashing.commit(40)
    assert crashing.send("spill 0") == "spilled"  # pages written, journal not yet cleared
    crashing.kill()
    assert Path(f"{db}-journal").stat().st_size > 0

    with pytest.raises(EnvironmentProblem, match="hot journal") as raised:
        sqlite.snapshot(db, tmp_path / "snap.db", LOCKED, None)

    assert "let the tracker open the database once" in str(raised.value)
    assert not (tmp_path / "snap.db").exists()
