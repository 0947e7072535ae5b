"""Benchmark: `trackerbackup run database` (MySQL) next to a bare dump into /dev/null.

The floor, in the same run on the same database: `mariadb-dump --single-transaction`
(same options as trackerbackup) inside the container, its output thrown away there.
trackerbackup additionally streams the dump out of `docker exec`, counts its rows,
compresses it (zstd -3), hashes it, fsyncs it and reads it back. The ratio says what that
costs; the peak RSS of the trackerbackup process, at two sizes, shows memory stays flat.

    /usr/bin/python3 bench/mysql_dump.py --config /tmp/tbmy/trackerbackup.toml \\
        --container mysql --rows 500000 2000000 --out docs/mysql-benchmark.md

The config must find the container (a test bed stack's config does); the benchmark
creates and drops its own database `bench_<rows>` (a `torrents`-shaped table).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.kit.cli import ROOT, command, environment

DUMP = ("mariadb-dump --single-transaction --quick --no-tablespaces --routines --triggers "
        "--events --hex-blob --default-character-set=utf8mb4")


def in_container(container: str, shell: str, stdin: bytes | None = None) -> None:
    # The password stays inside: the shell reads it from the container's environment.
    subprocess.run(["/usr/bin/docker", "exec", "-i", container, "sh", "-c",
                    f'export MYSQL_PWD="$MYSQL_ROOT_PASSWORD"; {shell}'],
                   input=stdin, check=True, stdout=subprocess.DEVNULL)


def create(container: str, database: str, rows: int) -> None:
    sql = f"""DROP DATABASE IF EXISTS {database}; CREATE DATABASE {database}; USE {database};
CREATE TABLE torrents (id INT AUTO_INCREMENT PRIMARY KEY, info_hash VARCHAR(40) NOT NULL
  UNIQUE, completed INT NOT NULL DEFAULT 0) ENGINE=InnoDB;
INSERT INTO torrents (info_hash, completed)
  SELECT LEFT(SHA1(seq), 40), seq % 1000 FROM seq_1_to_{rows};"""
    in_container(container, "exec mariadb -uroot", sql.encode())


def bare_seconds(container: str, database: str) -> float:
    started = time.monotonic()
    in_container(container, f"exec {DUMP} -uroot {database} > /dev/null")
    return time.monotonic() - started


def trackerbackup_run(config: Path, backup_dir: Path) -> tuple[float, int, int]:
    """(seconds, peak RSS in KiB, stored bytes) of one `run database`."""
    started = time.monotonic()
    proc = subprocess.Popen(command(config, "run", "database"), cwd=ROOT, env=environment(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        error = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"trackerbackup failed: {error}")
    stored = sum(f.stat().st_size for f in backup_dir.glob("database/*/*.sql.zst"))
    return seconds, usage.ru_maxrss, stored


def bench(config: Path, container: str, rows: int, repeat: int) -> dict[str, float]:
    database = f"bench_{rows}"
    create(container, database, rows)
    with tempfile.TemporaryDirectory(prefix="mysql-bench-") as tmp:
        backup_dir = Path(tmp) / "backups"
        conf = Path(tmp) / "trackerbackup.toml"
        text = "\n".join(line for line in config.read_text().split("\n[mysql]")[0].splitlines()
                         if not line.startswith("backup_dir = "))
        conf.write_text(text.replace("[general]", f'[general]\nbackup_dir = "{backup_dir}"', 1)
                        + f'\n[mysql]\ndatabase = "{database}"\n[database.retention]\n'
                        "keep_last = 1\n")
        conf.chmod(0o600)
        bare, runs = [], []
        for _ in range(repeat):
            bare.append(bare_seconds(container, database))
            runs.append(trackerbackup_run(conf, backup_dir))
    in_container(container, f"exec mariadb -uroot -e 'DROP DATABASE {database}'")
    return {"rows": rows, "bare_s": statistics.median(bare),
            "run_s": statistics.median(r[0] for r in runs),
            "rss_mib": max(r[1] for r in runs) / 1024, "stored_mib": runs[-1][2] / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--container", default="mysql")
    parser.add_argument("--rows", type=int, nargs="+", default=[500_000, 2_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    lines = ["| rows | bare dump > /dev/null (s) | trackerbackup run (s) | ratio | stored (MiB) "
             "| peak RSS (MiB) |", "| --- | --- | --- | --- | --- | --- |"]
    for rows in args.rows:
        r = bench(args.config, args.container, rows, args.repeat)
        lines.append(f"| {rows:,} | {r['bare_s']:.2f} | {r['run_s']:.2f} | "
                     f"{r['run_s'] / r['bare_s']:.2f}x | {r['stored_mib']:.1f} | "
                     f"{r['rss_mib']:.1f} |")
        print(lines[-1], flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
