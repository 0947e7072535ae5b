"""Benchmark: `trackerbackup run database` (MySQL) next to a bare dump, and the floors.

Three ways to dump the same database, in one run, each repeated (medians reported):

  (a) bare: `mariadb-dump --single-transaction` (trackerbackup's options) inside the
      container, its output thrown away there (`> /dev/null`): the issue's reference;
  (b) streamed: the same dump through `docker exec` to the host, `| cat > /dev/null`:
      what moving the dump out of the container costs before trackerbackup does anything;
  (c) trackerbackup: `run database`: the plan, the dump streamed out of `docker exec`,
      rows counted, zstd -3, sha256, fsync, read back and checked, committed.

The peak RSS is trackerbackup's own process (`getrusage(RUSAGE_SELF)` at its exit; the
docker CLI it runs is reported apart), at two sizes, to show memory stays flat.

    /usr/bin/python3 bench/mysql_dump.py --config /tmp/tbmy/trackerbackup.toml \\
        --container tbmy-mysql --rows 1000000 5000000 --out docs/mysql-benchmark-table.md

The config must find the container (a test bed stack's config does); the benchmark
creates its own database `bench_<rows>` (a `torrents`-shaped table), reuses it if it
holds the right number of rows, and drops it at the end unless --keep.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.kit.cli import ROOT, command, environment

DUMP = ("mariadb-dump --single-transaction --quick --no-tablespaces --routines --triggers "
        "--events --hex-blob --default-character-set=utf8mb4")
# The password stays inside: the container's shell reads it from its own environment.
WITH_PASSWORD = 'export MYSQL_PWD="$MYSQL_ROOT_PASSWORD"; '
# trackerbackup's own peak RSS (not its children's), written at its exit.
MEASURED = ("import atexit, resource, runpy, sys\n"
            "atexit.register(lambda: print('rss', "
            "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
            "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr))\n"
            "sys.argv[0] = 'trackerbackup'\n"
            "runpy.run_module('trackerbackup', run_name='__main__')\n")


def in_container(container: str, shell: str, stdin: bytes | None = None) -> str:
    return subprocess.run(["/usr/bin/docker", "exec", "-i", container, "sh", "-c",
                           WITH_PASSWORD + shell], input=stdin, check=True,
                          stdout=subprocess.PIPE).stdout.decode()


def ensure_database(container: str, database: str, rows: int) -> None:
    count = in_container(container, f"exec mariadb -uroot -N -e 'SELECT COUNT(*) FROM "
                         f"{database}.torrents' 2>/dev/null || true").strip()
    if count == str(rows):
        return
    sql = f"""DROP DATABASE IF EXISTS {database}; CREATE DATABASE {database}; USE {database};
CREATE TABLE torrents (id INT AUTO_INCREMENT PRIMARY KEY, info_hash VARCHAR(40) NOT NULL
  UNIQUE, completed INT NOT NULL DEFAULT 0) ENGINE=InnoDB;
INSERT INTO torrents (info_hash, completed)
  SELECT LEFT(SHA1(seq), 40), seq % 1000 FROM seq_1_to_{rows};"""
    in_container(container, "exec mariadb -uroot", sql.encode())


def timed(argv: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def bare_seconds(container: str, database: str) -> float:
    return timed(["/usr/bin/docker", "exec", container, "sh", "-c",
                  f"{WITH_PASSWORD}exec {DUMP} -uroot {database} > /dev/null"])


def streamed_seconds(container: str, database: str) -> float:
    dump = f"{WITH_PASSWORD}exec {DUMP} -uroot {database}"
    return timed(["/bin/bash", "-o", "pipefail", "-c",
                  f"/usr/bin/docker exec {container} sh -c '{dump}' | cat > /dev/null"])


def trackerbackup_run(config: Path, backup_dir: Path) -> dict[str, float]:
    """Seconds, peak RSS (own and children's, MiB), stored and raw MiB of one run."""
    argv = command(config, "run", "database")
    argv[1:3] = ["-c", MEASURED]  # `-m trackerbackup`, measured
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, env=environment(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, check=False)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"trackerbackup failed: {proc.stderr}")
    _, own, children = proc.stderr.strip().splitlines()[-1].split()
    [manifest] = backup_dir.glob("database/*/manifest.toml")  # keep_last = 1
    [artifact] = tomllib.loads(manifest.read_text())["artifacts"]
    return {"s": seconds, "rss": int(own) / 1024, "cli_rss": int(children) / 1024,
            "stored": artifact["size"] / 2**20, "raw": artifact["raw_size"] / 2**20}


def bench_config(config: Path, backup_dir: Path, database: str, directory: Path) -> Path:
    text = "\n".join(line for line in config.read_text().split("\n[mysql]")[0].splitlines()
                     if not line.startswith("backup_dir = "))
    conf = directory / "trackerbackup.toml"
    conf.write_text(text.replace("[general]", f'[general]\nbackup_dir = "{backup_dir}"', 1)
                    + f'\n[mysql]\ndatabase = "{database}"\n[database.retention]\n'
                    "keep_last = 1\n")
    conf.chmod(0o600)
    return conf


def bench(config: Path, container: str, rows: int, repeat: int, keep: bool) -> dict[str, float]:
    database = f"bench_{rows}"
    ensure_database(container, database, rows)
    bare_seconds(container, database)  # warm the buffer pool: every timed dump reads RAM
    with tempfile.TemporaryDirectory(prefix="mysql-bench-") as tmp:
        backup_dir = Path(tmp) / "backups"
        conf = bench_config(config, backup_dir, database, Path(tmp))
        bare, streamed, runs = [], [], []
        for _ in range(repeat):  # interleaved: load on the machine hits all three alike
            bare.append(bare_seconds(container, database))
            streamed.append(streamed_seconds(container, database))
            runs.append(trackerbackup_run(conf, backup_dir))
    if not keep:
        in_container(container, f"exec mariadb -uroot -e 'DROP DATABASE {database}'")
    return {"rows": rows, "a": statistics.median(bare), "b": statistics.median(streamed),
            "c": statistics.median(r["s"] for r in runs),
            "rss": max(r["rss"] for r in runs), "cli_rss": max(r["cli_rss"] for r in runs),
            "stored": runs[-1]["stored"], "raw": runs[-1]["raw"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--container", default="mysql")
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the bench databases")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    lines = ["| rows | dump (MiB) | (a) bare (s) | (b) streamed (s) | (c) trackerbackup (s) "
             "| b/a | c/a | c/b | stored (MiB) | peak RSS (MiB) | docker CLI RSS (MiB) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    print("\n".join(lines), flush=True)
    for rows in args.rows:
        r = bench(args.config, args.container, rows, args.repeat, args.keep)
        lines.append(f"| {rows:,} | {r['raw']:.0f} | {r['a']:.2f} | {r['b']:.2f} | "
                     f"{r['c']:.2f} | {r['b'] / r['a']:.2f}x | {r['c'] / r['a']:.2f}x | "
                     f"{r['c'] / r['b']:.2f}x | {r['stored']:.1f} | {r['rss']:.1f} | "
                     f"{r['cli_rss']:.1f} |")
        print(lines[-1], flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
