"""Benchmark: `trackerbackup run critical` next to `trackerbackup run database`, same run,
same database, with a tracker-like writer committing all along.

    sudo /usr/bin/python3 bench/critical_run.py --rows 5000000 --out /tmp/critical-bench.md

A tracker database of `--rows` torrents (about 3% with completed > 0; keys, whitelist,
metrics) is built once (tests/testbed/tree.py), then for each journal mode (rollback,
WAL) the test bed's writer (tests/kit/local_tracker.py) runs while the two types
alternate `--repeat` times. Reported: median wall time of each `run` (process start to
exit: snapshot, check, compression, read-back, commit), the stored artifact's size, the
manifest's writer wait, and the writer's own worst commit latency and failures over the whole mode.
The database is found by `sqlite.host_path` (no container), so an over-budget rollback
copy runs under the lock instead of pausing a tracker: its stall is measured, not hidden.

`--mysql-rows N` adds the MySQL flavour: a test bed stack (MariaDB stand-in, tracker
stand-in writing to it), its `torrents` table filled to N rows (the same 3% completed),
then `run database` (a full dump) and `run critical` alternate the same way.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import arguments, publish
from tests.kit.cli import trackerbackup
from tests.kit.local_tracker import LocalWriter
from tests.testbed.engine import ensure_engine
from tests.testbed.stack import MYSQL_DATABASE, Stack
from tests.testbed.tree import create_sqlite_db

TYPES = ("database", "critical")
Result = tuple[float, int, float, str]
# tree.py's share of torrents with completed > 0, for the MySQL table too.
COMPLETED_EVERY = 33


def run_type(config: Path, work: Path, backup_type: str,
             backups: Path | None = None) -> Result:
    """(wall seconds, stored bytes, writers_waited seconds, method) of one run."""
    started = time.monotonic()
    result = trackerbackup(config, "run", backup_type)
    wall = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"run {backup_type} failed: {result.stderr}")
    [manifest] = ((backups or work / "backups") / backup_type).glob("2*/manifest.toml")
    record = tomllib.loads(manifest.read_text())
    source = record["source"]
    waited = source.get("writers_waited_seconds",
                        max(source.get("lock_held_seconds", 0.0),
                            source.get("freeze_seconds", 0.0)))
    manifest.parent.rename(work / f"done-{time.monotonic_ns()}")  # one backup per run
    method = source.get("method", source.get("strategy", ""))
    return wall, sum(a["size"] for a in record["artifacts"]), waited, method


def bench_mode(db: Path, work: Path, mode: str, repeat: int) -> list[str]:
    with sqlite3.connect(db, isolation_level=None) as connection:
        connection.execute(f"PRAGMA journal_mode = {mode}")
    config = work / f"config-{mode}.toml"
    config.write_text(
        f'[general]\nbackup_dir = "{work}/backups"\nrun_dir = "{work}/run"\n'
        f'docker = "/nonexistent/docker"\n[sqlite]\nhost_path = "{db}"\n'
        f'[database.retention]\nkeep_last = 1\nkeep_daily = 0\n'
        f'[critical.retention]\nkeep_last = 1\nkeep_daily = 0\n')
    writer = LocalWriter(db, work / f"writer-{mode}")
    results: dict[str, list[Result]] = {t: [] for t in TYPES}
    try:
        writer.wait_for_commits(50)
        for _ in range(repeat):
            for backup_type in TYPES:
                results[backup_type].append(run_type(config, work, backup_type))
                writer.wait_for_commits(writer.committed() + 20)
    finally:
        stats = writer.stop()
    return table_rows(mode, results, stats)


def table_rows(mode: str, results: dict[str, list[Result]], stats: dict[str, Any]) -> list[str]:
    full = statistics.median(r[0] for r in results["database"])
    lines = []
    for backup_type in TYPES:
        wall = statistics.median(r[0] for r in results[backup_type])
        size = statistics.median(r[1] for r in results[backup_type])
        waited = max(r[2] for r in results[backup_type])
        methods = ", ".join(sorted({r[3] for r in results[backup_type]}))
        lines.append(f"| {mode} | {backup_type} | {wall:.2f} | {wall / full:.1%} | "
                     f"{size / 1e6:.1f} | {waited * 1000:.0f} | {methods} |")
    lines.append(f"| {mode} | writer over the whole mode | | | | max commit "
                 f"{stats['max_stall_ms']:.0f} ms, {stats['failed']} failed of "
                 f"{stats['committed'] + stats['failed']} | |")
    return lines


def bench_mysql(rows: int, repeat: int) -> list[str]:
    ensure_engine()
    with Stack(flavour="mysql", start_writer=False) as stack:
        stack.mysql_exec(
            f"INSERT INTO torrents (info_hash, completed) SELECT SHA1(CONCAT('bench', seq)), "
            f"IF(seq % {COMPLETED_EVERY} = 0, 1 + seq % 50, 0) "
            f"FROM seq_1_to_{rows - 2000}; ANALYZE TABLE torrents;".encode(),
            database=MYSQL_DATABASE)
        stack.config_path.write_text(stack.config_path.read_text() + (
            "[database.retention]\nkeep_last = 1\nkeep_daily = 0\n"
            "[critical.retention]\nkeep_last = 1\nkeep_daily = 0\n"))
        stack.start_writer()
        results: dict[str, list[Result]] = {t: [] for t in TYPES}
        stack.wait_for_commits(50)
        for _ in range(repeat):
            for backup_type in TYPES:
                results[backup_type].append(run_type(stack.config_path, stack.root,
                                                     backup_type, stack.backup_dir))
                stack.wait_for_commits(stack.writer_status()["committed"] + 20)
        stats = stack.stop_writer()
    return table_rows(f"mysql ({rows} rows)", results, stats)


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--mysql-rows", type=int, default=0,
                        help="also the MySQL flavour with this many torrents (test bed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="critical-bench-") as name:
        work = Path(name)
        db = work / "tracker.db"
        create_sqlite_db(db, args.rows, seed=1, journal_mode="delete")
        with sqlite3.connect(db) as connection:
            completed = connection.execute(
                "SELECT count(*) FROM torrents WHERE completed > 0").fetchone()[0]
        size = db.stat().st_size / 1e6
        lines = ["| journal mode | type | wall s (median) | of database's | stored MB | "
                 "max writer wait (manifest) ms | method |",
                 "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
        for mode in ("delete", "wal"):
            lines += bench_mode(db, work, mode, args.repeat)
    if args.mysql_rows:
        lines += bench_mysql(args.mysql_rows, args.repeat)
    text = "\n".join(lines) + (
        f"\n\n{args.rows} torrents rows ({completed} with completed > 0), {size:.0f} MB, "
        f"{args.repeat} repeats, {os.cpu_count()} CPUs, writer committing every 5 ms\n")
    publish(text, args.out)


if __name__ == "__main__":
    main()
