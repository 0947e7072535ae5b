"""Benchmark: snapshots of a live, tracker-shaped SQLite database, side by side.

Builds a database shaped like the tracker's (default 5,000,000 torrents rows), runs a
tracker-like writer (one small transaction every ~5 ms, in its own process) and, in
each journal mode, measures:

- `cp` of the live file: the physical limit (and not a consistent backup);
- stop-copy-start: the writer stopped (SIGSTOP) for a `cp`: downtime = copy time;
- the `sqlite3 .backup` equivalent: the online backup API, 100 pages a step, as the CLI
  does, given `--backup-timeout` seconds; the progress reached is reported;
- trackerbackup's snapshot (`trackerbackup.sqlite.snapshot`);
- in WAL mode, the alternatives it does not use: backup API in one step, VACUUM INTO.

For each: wall time, ratio to `cp`, the writer's max and p99 transaction time (its
stall), failed writes and downtime. Prints a Markdown table; `--out` also writes it.

    sudo /usr/bin/python3 bench/sqlite_snapshot.py --rows 5000000 --out /tmp/bench.md
"""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import arguments, publish
from tests.kit.local_tracker import LocalWriter, SignalFreezer
from tests.testbed.tree import create_sqlite_db
from trackerbackup import sqlite

WARM_UP_COMMITS = 50
COOL_DOWN_COMMITS = 50
MODES = ("delete", "wal")


@dataclass(frozen=True)
class Outcome:
    wall: float
    downtime: float = 0.0
    note: str = ""


@dataclass(frozen=True)
class Row:
    method: str
    mode: str
    outcome: Outcome
    stats: dict[str, Any]  # the writer's final status (tests/testbed/writer.py)


Method = Callable[[Path, Path, LocalWriter], Outcome]


def timed(action: Callable[[], object]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def copy_with_cp(db: Path, dest: Path, writer: LocalWriter) -> Outcome:
    return Outcome(timed(lambda: subprocess.run(["cp", str(db), str(dest)], check=True)),
                   note="not consistent")


def stop_copy_start(db: Path, dest: Path, writer: LocalWriter) -> Outcome:
    freezer = SignalFreezer(writer.pid, "stop")
    started = time.monotonic()
    with freezer.frozen():
        subprocess.run(["cp", str(db), str(dest)], check=True)
    downtime = time.monotonic() - started
    return Outcome(downtime, downtime, "plus the container's stop and start")


def make_stepped_backup(timeout: float) -> Method:
    def stepped_backup(db: Path, dest: Path, writer: LocalWriter) -> Outcome:
        progress = {"best": 0.0, "restarts": 0, "last": -1}
        deadline = time.monotonic() + timeout

        def on_step(status: int, remaining: int, total: int) -> None:
            done = (total - remaining) / total if total else 1.0
            if remaining > progress["last"] >= 0:
                progress["restarts"] += 1
            progress["last"] = remaining
            progress["best"] = max(progress["best"], done)
            if time.monotonic() > deadline:
                raise TimeoutError

        source = sqlite3.connect(db)
        target = sqlite3.connect(dest)
        started = time.monotonic()
        try:
            source.backup(target, pages=100, progress=on_step)
            note = f"finished, {progress['restarts']} restarts"
        except TimeoutError:
            note = (f"gave up after {timeout:g} s at {progress['best']:.0%} at best, "
                    f"{progress['restarts']} restarts")
        finally:
            source.close()
            target.close()
        return Outcome(time.monotonic() - started, note=note)

    return stepped_backup


def make_trackerbackup(budget: float) -> Method:
    def trackerbackup(db: Path, dest: Path, writer: LocalWriter) -> Outcome:
        report = sqlite.snapshot(db, dest, sqlite.SqlitePolicy(max_writer_stall=budget),
                                 lambda name: SignalFreezer(writer.pid, name))
        verify = report.duration_seconds - report.copy_seconds
        return Outcome(report.copy_seconds, report.freeze_seconds,
                       f"{report.strategy} ({report.copy_method}), lock "
                       f"{report.lock_held_seconds * 1000:.0f} ms, then verification "
                       f"({report.integrity_mode}) {verify:.1f} s")

    return trackerbackup


def one_step_backup(db: Path, dest: Path, writer: LocalWriter) -> Outcome:
    source = sqlite3.connect(db)
    target = sqlite3.connect(dest)
    target.execute("PRAGMA journal_mode = OFF")
    target.execute("PRAGMA synchronous = OFF")
    wall = timed(lambda: source.backup(target, pages=-1))
    source.close()
    target.close()
    return Outcome(wall, note="alternative, not used")


def vacuum_into(db: Path, dest: Path, writer: LocalWriter) -> Outcome:
    source = sqlite3.connect(db)
    wall = timed(lambda: source.execute("VACUUM INTO ?", (str(dest),)))
    source.close()
    return Outcome(wall, note="alternative, not used")


def measure(name: str, method: Method, db: Path, mode: str, rows: int, work: Path) -> Row:
    dest = work / "copy.db"
    # Start each row on a quiet disk: no writeback left over from the previous one.
    os.sync()
    time.sleep(1)
    writer = LocalWriter(db, work / "writer")
    try:
        writer.wait_for_commits(WARM_UP_COMMITS)
        outcome = method(db, dest, writer)
        writer.wait_for_commits(writer.committed() + COOL_DOWN_COMMITS)
        stats = writer.stop()
    finally:
        writer.kill()
        for leftover in work.glob("copy.db*"):
            leftover.unlink()
    row = Row(name, mode, outcome, stats)
    print(format_row(row, None), file=sys.stderr, flush=True)
    return row


def set_journal_mode(db: Path, mode: str) -> None:
    connection = sqlite3.connect(db)
    connection.execute(f"PRAGMA journal_mode = {mode}")
    connection.close()


def run(rows: int, work: Path, budget: float, backup_timeout: float) -> list[Row]:
    db = work / "tracker.db"
    build = timed(lambda: create_sqlite_db(db, rows, seed=1, journal_mode="delete"))
    print(f"built {rows} rows, {db.stat().st_size / 1e6:.0f} MB in {build:.0f} s",
          file=sys.stderr, flush=True)
    methods: list[tuple[str, Method, tuple[str, ...]]] = [
        ("writer alone (reference)", lambda d, t, w: Outcome(timed(lambda: time.sleep(2))),
         MODES),
        ("cp (live file)", copy_with_cp, MODES),
        ("stop, cp, start", stop_copy_start, MODES),
        ("sqlite3 .backup (100 pages a step)", make_stepped_backup(backup_timeout), MODES),
        (f"trackerbackup snapshot (budget {budget:g} s)", make_trackerbackup(budget), MODES),
        ("trackerbackup snapshot, over budget: pause (budget 0.01 s)",
         make_trackerbackup(0.01), ("delete",)),
        ("backup API, one step", one_step_backup, ("wal",)),
        ("VACUUM INTO", vacuum_into, ("wal",)),
    ]
    results = []
    for mode in MODES:
        set_journal_mode(db, mode)
        for name, method, modes in methods:
            if mode in modes:
                results.append(measure(name, method, db, mode, rows, work))
    return results


def format_row(row: Row, cp_wall: float | None) -> str:
    reference = row.method.startswith("writer alone")
    ratio = f"{row.outcome.wall / cp_wall:.2f}x" if cp_wall and not reference else ""
    mode = "WAL" if row.mode == "wal" else "rollback (DELETE)"
    return (f"| {row.method} | {mode} | {row.outcome.wall:.2f} | {ratio} | "
            f"{row.stats['max_stall_ms']:.0f} | {row.stats['p99_stall_ms']:.0f} | "
            f"{row.stats['failed']} | {row.outcome.downtime:.2f} | {row.stats['committed']} | "
            f"{row.outcome.note} |")


def table(rows: list[Row]) -> str:
    cp_walls = {row.mode: row.outcome.wall for row in rows if row.method == "cp (live file)"}
    lines = [
        "| method | journal mode | wall s | vs cp | writer max stall ms | writer p99 ms "
        "| failed writes | writer downtime s | commits | notes |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    lines += [format_row(row, cp_walls.get(row.mode)) for row in rows]
    return "\n".join(lines)


def machine() -> str:
    mount = subprocess.run(["df", "--output=source,fstype", "."], capture_output=True,
                           text=True, check=False).stdout.split("\n")[1].split()
    disks = subprocess.run(["lsblk", "-d", "-n", "-o", "NAME,MODEL,ROTA,SIZE"],
                           capture_output=True, text=True, check=False).stdout.strip()
    disk_list = "; ".join(" ".join(disk.split()) for disk in disks.splitlines())
    return (f"{os.cpu_count()} CPUs, {platform.machine()}, Linux {platform.release()}, "
            f"filesystem {' '.join(mount)}, disks: {disk_list}; "
            f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}")


def main() -> None:
    parser = arguments(__doc__, repeat=None)
    parser.add_argument("--budget", type=float, default=1.0, help="sqlite.max_writer_stall")
    parser.add_argument("--backup-timeout", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="sqlite-bench-") as work:
        os.chdir(work)
        rows = run(args.rows, Path(work), args.budget, args.backup_timeout)
        text = (f"{table(rows)}\n\n{args.rows} torrents rows, "
                f"{(Path(work) / 'tracker.db').stat().st_size / 1e6:.0f} MB; "
                f"budget {args.budget:g} s; {machine()}\n")
    publish(text, args.out)


if __name__ == "__main__":
    main()
