"""Benchmark: a whole nightly `trackerbackup run database` next to its physical floor.

The floor is what any backup of the same file must do at least, measured side by side in
the same run on the same file: `cp` of the database + `zstd -T0 -3` of the copy +
`sha256sum` of the result. trackerbackup does more (a consistent snapshot, a structural
check, a read-back of what it stored), and the ratio says what that costs, once with the
default check (`sqlite.integrity_check = "quick"`) and once with the full one.

    sudo /usr/bin/python3 bench/database_run.py --rows 5000000 --out /tmp/run-bench.md

The database is at rest (no writer), in the page cache, rollback journal, as the tracker
leaves it. Repeats each measurement `--repeat` times and reports the median.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import arguments, publish
from tests.kit.cli import trackerbackup
from tests.testbed.tree import create_sqlite_db


def timed(argv: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def floor_seconds(db: Path, work: Path) -> dict[str, float]:
    copy, packed = work / "floor.db", work / "floor.db.zst"
    times = {"cp": timed(["cp", str(db), str(copy)]),
             "zstd -T0 -3": timed(["zstd", "-T0", "-3", "-q", "-f", str(copy), "-o",
                                   str(packed)]),
             "sha256sum": timed(["sha256sum", str(packed)])}
    copy.unlink()
    packed.unlink()
    return times


def trackerbackup_run(db: Path, work: Path, integrity: str) -> tuple[float, dict[str, float]]:
    config = work / f"config-{integrity}.toml"
    config.write_text(
        f'[general]\nbackup_dir = "{work}/backups-{integrity}"\nrun_dir = "{work}/run"\n'
        f'docker = "/nonexistent/docker"\n'
        f'[sqlite]\nhost_path = "{db}"\nintegrity_check = "{integrity}"\n'
        f'[database.retention]\nkeep_last = 1\nkeep_daily = 0\n')
    started = time.monotonic()
    result = trackerbackup(config, "run", "database")
    wall = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"trackerbackup run database exited {result.returncode}:\n"
                         f"{result.stderr}")
    [manifest] = (work / f"backups-{integrity}" / "database").glob("2*/manifest.toml")
    source = tomllib.loads(manifest.read_text())["source"]
    parts = {"copy": source["copy_seconds"],
             "check": source["duration_seconds"] - source["copy_seconds"]}
    manifest.parent.rename(work / f"done-{time.monotonic_ns()}")  # one backup per run
    return wall, parts


def main() -> None:
    parser = arguments(__doc__)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="run-bench-") as name:
        work = Path(name)
        db = work / "tracker.db"
        create_sqlite_db(db, args.rows, seed=1, journal_mode="delete")
        subprocess.run(["cat", str(db)], check=True, stdout=subprocess.DEVNULL)  # cache it
        floors: list[float] = []
        runs: dict[str, list[tuple[float, dict[str, float]]]] = {"quick": [], "full": []}
        for _ in range(args.repeat):
            floors.append(sum(floor_seconds(db, work).values()))
            for integrity in runs:
                runs[integrity].append(trackerbackup_run(db, work, integrity))
        floor = statistics.median(floors)
        lines = ["| what | wall s (median) | vs floor | of which copy s | check s |",
                 "| --- | ---: | ---: | ---: | ---: |",
                 f"| floor: cp + zstd -T0 -3 + sha256sum | {floor:.2f} | 1.00x | | |"]
        for integrity, results in runs.items():
            wall = statistics.median(r[0] for r in results)
            copy = statistics.median(r[1]["copy"] for r in results)
            check = statistics.median(r[1]["check"] for r in results)
            lines.append(f"| trackerbackup run database, integrity_check = \"{integrity}\" "
                         f"| {wall:.2f} | {wall / floor:.2f}x | {copy:.2f} | {check:.2f} |")
        size = db.stat().st_size / 1e6
    text = "\n".join(lines) + f"\n\n{args.rows} torrents rows, {size:.0f} MB, " \
                              f"{args.repeat} repeats, {os.cpu_count()} CPUs\n"
    publish(text, args.out)


if __name__ == "__main__":
    main()
