"""sqlite/wal.py under forced interleavings: a writer in another process commits,
checkpoints (PASSIVE, RESTART, TRUNCATE), tears a frame or spills an open transaction at
every chunk of the copy of the database file and of its -wal, with our reader on read
mark 0 and on read mark >= 1. Each snapshot must be the state after exactly k commits,
k >= the commits made before it began. A negative control shows the same sweep catches
the stale snapshots of a copy that always replays the -wal (the bug of issue 8)."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.unit.sqlite.scripted_writer import InconsistentSnapshot, ScriptedWriter, commits_in
from trackerbackup import sqlite
from trackerbackup.errors import BackupFailed, EnvironmentProblem
from trackerbackup.sqlite import FaultPoints, SnapshotReport, SqlitePolicy, wal

CHUNK = 64 * 1024
SETUP_COMMITS = 60
QUICK = SqlitePolicy(integrity_check="quick")
ACTIONS = {
    "commits": ["commit 25"],
    "passive": ["commit 25", "checkpoint PASSIVE"],
    "restart": ["checkpoint RESTART", "commit 25"],
    "truncate": ["checkpoint TRUNCATE", "commit 25"],
    "torn": ["commit 25", "torn"],
    "spill": ["commit 5", "spill 0"],
}


def wal_index(db: Path) -> tuple[int, int]:
    """(mxFrame, nBackfill) from the -shm: the wal-index header and checkpoint info."""
    raw = Path(f"{db}-shm").read_bytes()[:100]
    return (int.from_bytes(raw[16:20], sys.byteorder),
            int.from_bytes(raw[96:100], sys.byteorder))


@dataclass
class Scene:
    """A WAL database whose reader will land on the wanted read mark, and its writer."""

    db: Path
    writer: ScriptedWriter
    commits_before: int
    open_transaction: bool = False
    log: list[str] = field(default_factory=list)

    def act(self, commands: list[str]) -> None:
        for command in commands:
            answer = self.writer.send(command)
            self.log.append(f"{command} -> {answer}")
            assert not answer.startswith(("error", "unknown")), self.log
            self.open_transaction |= command.startswith("spill")

    def settle(self) -> None:
        if self.open_transaction:
            assert self.writer.send("rollback") == "rolled back"
            self.open_transaction = False


def make_scene(directory: Path, read_mark: int) -> Scene:
    db = directory / "tracker.db"
    writer = ScriptedWriter(db, "wal")
    writer.commit(SETUP_COMMITS)
    assert writer.send("checkpoint PASSIVE").startswith("checkpoint busy=0")
    if read_mark > 0:
        writer.commit(10)  # frames not yet backfilled: a reader must use them
    frames, backfilled = wal_index(db)
    if read_mark == 0:
        assert frames == backfilled > 0
    else:
        assert backfilled < frames
    return Scene(db, writer, writer.committed)


@pytest.fixture
def scenes(tmp_path: Path) -> Iterator[Callable[[int], Scene]]:
    made: list[Scene] = []

    def make(read_mark: int) -> Scene:
        directory = tmp_path / f"scene-{len(made)}"
        directory.mkdir()
        made.append(make_scene(directory, read_mark))
        return made[-1]

    yield make
    for scene in made:
        scene.writer.close()


def fault_points(point: str, step: int, action: Callable[[], None]) -> FaultPoints:
    """FaultPoints that run `action` once: before chunk `step` of `point` ("db", "wal"),
    or just before the read transaction ends ("release")."""
    done = False

    def at_chunk(offset: int) -> None:
        nonlocal done
        if not done and offset == step * CHUNK:
            done = True
            action()

    if point == "release":
        return FaultPoints(before_release=action, chunk_bytes=CHUNK, reflink=False)
    if point == "db":
        return FaultPoints(before_db_chunk=at_chunk, chunk_bytes=CHUNK, reflink=False)
    return FaultPoints(before_wal_chunk=at_chunk, chunk_bytes=CHUNK, reflink=False)


def chunks(path: Path) -> int:
    return -(-path.stat().st_size // CHUNK)


def snapshot_with_fault(scene: Scene, dest: Path, point: str, step: int,
                        commands: list[str]) -> tuple[SnapshotReport, int]:
    report = sqlite.snapshot(scene.db, dest, QUICK, None,
                             faults=fault_points(point, step, lambda: scene.act(commands)))
    scene.settle()
    return report, commits_in(dest)


def every_fault_point(db: Path) -> list[tuple[str, int]]:
    return ([("db", step) for step in range(chunks(db))]
            + [("wal", step) for step in range(chunks(Path(f"{db}-wal")))]
            + [("release", 0)])


@pytest.mark.parametrize("read_mark", [0, 1], ids=["read-mark-0", "read-mark-1+"])
@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_every_interleaving_gives_an_exact_state_no_older_than_the_start(
    scenes: Callable[[int], Scene], tmp_path: Path, read_mark: int, action: str
) -> None:
    probe = scenes(read_mark)
    points = every_fault_point(probe.db)
    assert len(points) >= 8  # the -wal spans several chunks: the sweep means something
    wal_used: set[bool] = set()
    for index, (point, step) in enumerate(points):
        scene = scenes(read_mark)
        report, k = snapshot_with_fault(scene, tmp_path / f"snap-{index}.db", point, step,
                                        ACTIONS[action])
        assert k >= scene.commits_before, (point, step, scene.log)
        assert k <= scene.writer.committed
        wal_used.add(report.wal_frames_used)
    if read_mark > 0:
        assert wal_used == {True}  # under mark >= 1 the -wal is always needed and kept


def test_a_restart_under_the_wal_copy_falls_back_to_the_database_file(
    scenes: Callable[[int], Scene], tmp_path: Path
) -> None:
    scene = scenes(0)
    report, k = snapshot_with_fault(scene, tmp_path / "snap.db", "wal", 1, ["commit 25"])

    assert not report.wal_frames_used
    assert k == scene.commits_before  # the file alone: exactly the state at the start
    assert any("commit 25 -> commits" in line for line in scene.log)


def test_without_the_header_comparison_the_sweep_finds_stale_snapshots(
    scenes: Callable[[int], Scene], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Negative control: a copy that always replays its -wal (headers always 'equal')
    yields states older than the start, or no exact state at all, under the same sweep."""
    monkeypatch.setattr(wal, "wal_header", lambda fd: b"always the same")
    probe = scenes(0)
    failures = []
    for step in range(1, chunks(Path(f"{probe.db}-wal"))):
        scene = scenes(0)
        try:
            _, k = snapshot_with_fault(scene, tmp_path / f"naive-{step}.db", "wal", step,
                                       ["commit 25"])
        except (InconsistentSnapshot, BackupFailed) as error:
            failures.append(f"step {step}: {error}")
            continue
        if k < scene.commits_before:
            failures.append(f"step {step}: {k} < {scene.commits_before}")
    assert failures, "the naive copy passed every interleaving: the sweep proves nothing"


STRESS_SNAPSHOTS = 200


def test_stress_random_slow_copies_against_a_writer_that_restarts_the_wal_constantly(
    tmp_path: Path,
) -> None:
    """200 snapshots, each copy slowed at random before its first 16 KB chunks (where a
    restart overtakes it), while a writer in another process commits in bursts and
    checkpoints (PASSIVE, RESTART, TRUNCATE) after nearly every burst. Every snapshot is
    an exact state no older than its start."""
    db = tmp_path / "tracker.db"
    writer = ScriptedWriter(db, "free-run", "8")
    rng = random.Random(8)

    def slow(offset: int) -> None:
        if offset < 4 * 16 * 1024:
            time.sleep(rng.random() * 0.004)

    faults = FaultPoints(before_db_chunk=slow, before_wal_chunk=slow,
                         chunk_bytes=16 * 1024, reflink=False)
    outcomes = []
    try:
        for index in range(STRESS_SNAPSHOTS):
            before = commits_in(db)
            dest = tmp_path / f"snap-{index}.db"
            report = sqlite.snapshot(db, dest, QUICK, None, faults=faults)
            k = commits_in(dest)
            assert k >= before, f"snapshot {index}: {k} commits, {before} before it began"
            outcomes.append((report.wal_frames_used, k - before))
            dest.unlink()
    finally:
        total = writer.stop()
    assert total.startswith("commits ")
    # Both branches ran: the -wal replayed, and the database file alone (a restart).
    assert {used for used, _ in outcomes} == {True, False}
    assert sum(ahead > 0 for _, ahead in outcomes) > STRESS_SNAPSHOTS // 4


@pytest.fixture
def read_only_mount(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(source dir, the same dir bind-mounted read-only): needs root and mount(8)."""
    source, mounted = tmp_path / "rw", tmp_path / "ro"
    source.mkdir()
    mounted.mkdir()
    for argv in (["mount", "--bind", str(source), str(mounted)],
                 ["mount", "-o", "remount,bind,ro", str(mounted)]):
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            subprocess.run(["umount", str(mounted)], capture_output=True, check=False)
            pytest.skip(f"cannot make a read-only bind mount here: {result.stderr.strip()}")
    yield source, mounted
    subprocess.run(["umount", str(mounted)], check=True)


def test_a_wal_database_on_a_read_only_mount_without_wal_files_is_a_clear_error(
    read_only_mount: tuple[Path, Path], tmp_path: Path
) -> None:
    source, mounted = read_only_mount
    writer = ScriptedWriter(source / "tracker.db", "wal")
    writer.commit(5)
    writer.close()  # the last connection removes the -wal and -shm
    assert not Path(f"{source}/tracker.db-wal").exists()

    with pytest.raises(EnvironmentProblem, match="create its -wal/-shm") as raised:
        sqlite.snapshot(mounted / "tracker.db", tmp_path / "snap.db", QUICK, None)

    assert f"ReadWritePaths={mounted}" in str(raised.value)
    assert raised.value.exit_code == 3
