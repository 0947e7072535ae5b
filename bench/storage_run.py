"""Benchmark: `trackerbackup run storage` next to `tar -c | zstd -T0 -3` of the same tree.

The tree: a tracker database of `--rows` torrents (rollback journal, at rest) plus
`--files` small files (Caddy/Grafana-like JSON of a few hundred bytes) in 100 directories.
tar + zstd is the floor (it is not consistent: it reads the live database raw);
trackerbackup also snapshots and checks the database, hashes the stream and reads the
artifact back. Wall time and peak RSS (GNU time's; for the floor tar's and zstd's peaks
summed) are measured side by side, `--repeat` times, medians reported. Run it on an
otherwise idle machine: the ratio is what it is worth.

    sudo /usr/bin/python3 bench/storage_run.py --rows 5000000 --files 50000 --out /tmp/s.md
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import arguments, publish
from tests.kit.cli import ROOT, command, environment
from tests.testbed.tree import create_sqlite_db


def build_tree(compose: Path, rows: int, files: int) -> None:
    storage = compose / "storage"
    database = storage / "tracker/lib/database"
    database.mkdir(parents=True)
    create_sqlite_db(database / "tracker.db", rows, seed=1, journal_mode="delete")
    for number in range(files):
        directory = storage / "caddy/data/many" / f"{number % 100:02d}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{number}.json").write_text('{"sans": ["tracker.example.com"], '
                                                  f'"n": {number}, "pad": "{"x" * 200}"}}\n')
    (compose / "docker-compose.yml").write_text("services: {}\n")
    (compose / ".env").write_text("A=b\n")


def measured(argv: list[str], rss: Path, **popen: Any) -> subprocess.Popen[bytes]:
    """`argv` under GNU time, which writes its peak RSS (KiB) to `rss`. (The rusage of a
    child of this process would count the pages it shared with this one before exec.)"""
    return subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", str(rss), *argv], **popen)


def wait_for(process: subprocess.Popen[bytes], rss: Path) -> int:
    """The process's peak RSS in KiB, after checking that it succeeded."""
    if process.wait() != 0:
        raise SystemExit(f"{process.args!r} exited {process.returncode}")
    return int(rss.read_text().split()[-1])


def floor_run(compose: Path, work: Path) -> tuple[float, int]:
    out = work / "floor.tar.zst"
    started = time.monotonic()
    with open(out, "wb") as sink:
        tar = measured(["tar", "-C", "/", "-cf", "-", str(compose.relative_to("/"))],
                       work / "tar.rss", stdout=subprocess.PIPE)
        zstd = measured(["zstd", "-T0", "-3", "-q", "-c"], work / "zstd.rss",
                        stdin=tar.stdout, stdout=sink)
        assert tar.stdout is not None
        tar.stdout.close()
        peak = wait_for(tar, work / "tar.rss") + wait_for(zstd, work / "zstd.rss")
    wall = time.monotonic() - started
    out.unlink()
    return wall, peak


def trackerbackup_run(compose: Path, work: Path) -> tuple[float, int]:
    config = work / "config.toml"
    config.write_text(
        f'[general]\ncompose_dir = "{compose}"\nbackup_dir = "{work}/backups"\n'
        f'run_dir = "{work}/run"\ndocker = "/nonexistent/docker"\n'
        f'[storage.retention]\nkeep_last = 1\nkeep_daily = 0\n')
    started = time.monotonic()
    process = measured(command(config, "run", "storage"), work / "ours.rss", cwd=ROOT,
                       env=environment(), stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    peak = wait_for(process, work / "ours.rss")
    return time.monotonic() - started, peak


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--files", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="storage-bench-") as name:
        work = Path(name)
        compose = work / "opt/torrust"
        build_tree(compose, args.rows, args.files)
        subprocess.run(["tar", "-cf", "/dev/null", str(compose)], check=True)  # cache it
        floors, ours = [], []
        for _ in range(args.repeat):  # interleaved, so both see the same load
            floors.append(floor_run(compose, work))
            ours.append(trackerbackup_run(compose, work))
        size = sum(p.stat().st_size for p in compose.rglob("*") if p.is_file()) / 1e6
    floor_wall = statistics.median(w for w, _ in floors)
    our_wall = statistics.median(w for w, _ in ours)
    lines = ["| what | wall s (median) | vs floor | peak RSS MiB (max) |",
             "| --- | ---: | ---: | ---: |",
             f"| floor: tar -c \\| zstd -T0 -3 | {floor_wall:.2f} | 1.00x | "
             f"{max(p for _, p in floors) / 1024:.0f} |",
             f"| trackerbackup run storage | {our_wall:.2f} | {our_wall / floor_wall:.2f}x | "
             f"{max(p for _, p in ours) / 1024:.0f} |"]
    text = "\n".join(lines) + (f"\n\n{args.rows} torrent rows + {args.files} small files, "
                               f"{size:.0f} MB, {args.repeat} repeats, {os.cpu_count()} CPUs\n")
    publish(text, args.out)


if __name__ == "__main__":
    main()
