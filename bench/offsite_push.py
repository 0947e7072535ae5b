"""Benchmark: trackerbackup's off-site push vs a bare `restic backup` of the same content.

Two cases from issue 13, each pushed twice (a first push, then one after a change), into
two fresh local-path restic repositories side by side: wall time and repository growth of
the second push.

(a) the tracker database after a day of tracker-like writes (new torrents inserted,
    `completed` incremented on a hot set scattered over the table);
(b) a storage tree where only a few small files changed (the selective type).
(b') the same tree pushed as the compressed `.zst` artifact: what not to do.

    sudo /usr/bin/python3 bench/offsite_push.py --rows 5000000 --out /tmp/offsite-bench.md

Targets (issue 13): time <= 1.1x and growth <= 1.1x of the bare push's.
"""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import arguments, publish
from tests.kit.cli import command, environment, trackerbackup
from tests.testbed.tree import create_sqlite_db, create_tree

ROOT = Path(__file__).resolve().parents[1]
RESTIC = "/usr/bin/restic"
FIXED = "fixed cost: trackerbackup offsite list (start, one restic call)"


def repo_bytes(repo: Path) -> int:
    return sum(p.stat().st_size for p in repo.rglob("*") if p.is_file())


def restic_env(work: Path, repo: Path) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": str(work), "RESTIC_REPOSITORY": str(repo),
            "RESTIC_PASSWORD_FILE": str(work / "pw"), "RESTIC_CACHE_DIR": str(work / "cache")}


def init(work: Path, repo: Path) -> None:
    subprocess.run([RESTIC, "init", "--repository-version", "2", "-q"], check=True,
                   env=restic_env(work, repo))


def measured(argv: list[str], env: dict[str, str] | None, repo: Path,
             stdin: Path | None = None) -> tuple[float, int]:
    before = repo_bytes(repo)
    started = time.monotonic()
    with open(stdin or os.devnull, "rb") as source:
        subprocess.run(argv, check=True, env=env, stdin=source, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, cwd=ROOT)
    return time.monotonic() - started, repo_bytes(repo) - before


def write_config(work: Path, name: str, db: Path, compose: Path) -> Path:
    config = work / f"{name}.toml"
    config.write_text(
        f'[general]\nbackup_dir = "{work}/backups"\nrun_dir = "{work}/run"\n'
        f'compose_dir = "{compose}"\ndocker = "/nonexistent/docker"\n'
        f'[sqlite]\nhost_path = "{db}"\n'
        f'[offsite]\nrepository = "{work}/repo-tb"\npassword_file = "{work}/pw"\n'
        # runs push only "storage" (never run here): the push is timed on its own, by sync
        'types = ["storage"]\n'
        '[database.retention]\nkeep_last = 3\n[selective.retention]\nkeep_last = 3\n')
    config.chmod(0o600)
    return config


def tracker_day(db: Path, rows: int, seed: int = 7) -> None:
    """New torrents (0.5%), `completed` + 1 on a hot set (2%) scattered over the table."""
    rng = random.Random(seed)
    connection = sqlite3.connect(db, isolation_level=None)
    try:
        connection.execute("BEGIN")
        connection.executemany("INSERT INTO torrents (info_hash, completed) VALUES (?, 1)",
                               ((hashlib.sha1(f"new-{n}".encode()).hexdigest(),)
                                for n in range(1, rows // 200 + 1)))
        hot = rng.sample(range(1, rows + 1), rows // 50)
        connection.executemany("UPDATE torrents SET completed = completed + 1 WHERE id = ?",
                               ((n,) for n in hot))
        connection.execute("COMMIT")
    finally:
        connection.close()


def add_blobs(directory: Path, count: int) -> None:
    """1 MB files of incompressible data (certificates, GeoIP files...): a tree worth
    deduplicating, ~24 MB."""
    directory.mkdir(parents=True)
    rng = random.Random(3)
    for n in range(count):
        (directory / f"blob-{n:02d}.bin").write_bytes(rng.randbytes(1 << 20))


def touch_a_few(compose: Path) -> None:
    for path in sorted(p for p in compose.rglob("*") if p.is_file())[:3]:
        path.write_bytes(path.read_bytes() + b"\n# changed\n")


def local_backup(config: Path, backup_type: str) -> Path:
    """Make a local backup (the run does not push: see write_config)."""
    result = trackerbackup(config, "run", backup_type)
    if result.returncode != 0:
        raise SystemExit(f"trackerbackup run {backup_type} exited {result.returncode}:\n"
                         f"{result.stderr}")
    newest = max((config.parent / "backups" / backup_type).glob("2*"))
    [artifact] = [p for p in newest.iterdir() if p.name != "manifest.toml"]
    return artifact


def case(work: Path, config: Path, backup_type: str, bare_path: Path,
         change: object) -> dict[str, tuple[float, int]]:
    """Second-push time and growth: trackerbackup sync, bare restic of the raw content,
    and restic of the stored .zst."""
    tb_env = {**environment(), "CACHE_DIRECTORY": str(work / "cache")}
    results: dict[str, tuple[float, int]] = {}
    for round_ in (1, 2):
        if round_ == 2:
            change()  # type: ignore[operator]
        artifact = local_backup(config, backup_type)
        tb = measured(command(config, "offsite", "sync", backup_type), tb_env,
                      work / "repo-tb")
        bare = measured([RESTIC, "backup", "-q", "--host", "bare", str(bare_path)],
                        restic_env(work, work / "repo-bare"), work / "repo-bare")
        zst = measured([RESTIC, "backup", "-q", "--stdin", "--stdin-filename", artifact.name],
                       restic_env(work, work / "repo-zst"), work / "repo-zst", stdin=artifact)
        results = {"trackerbackup push": tb, "bare restic backup": bare,
                   "restic backup of the .zst": zst}
        if round_ == 1:
            first = results
    # The fixed cost in every push: Python's start and one restic call (the listing)
    floor = measured(command(config, "offsite", "list"), tb_env, work / "repo-tb")
    return {f"{name} (first)": first[name] for name in first} | results | {
        FIXED: floor}


def table(title: str, results: dict[str, tuple[float, int]]) -> list[str]:
    bare = results["bare restic backup"]
    lines = [f"### {title}", "", "| push | wall s | growth MB | time vs bare | growth vs bare |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name, (wall, growth) in results.items():
        ratio = "" if "(first)" in name or name == FIXED else (
            f"{wall / bare[0]:.2f}x | {growth / max(bare[1], 1):.2f}x")
        lines.append(f"| {name} | {wall:.2f} | {growth / 1e6:.2f} | {ratio or ' | '} |")
    return [*lines, ""]


def main() -> None:
    parser = arguments(__doc__, repeat=None)
    parser.add_argument("--cases", default="ab", help="which cases: a, b or ab (default)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="offsite-bench-") as name:
        work = Path(name)
        (work / "pw").write_text("bench\n")
        (work / "pw").chmod(0o600)
        for repo in ("repo-tb", "repo-bare", "repo-zst"):
            init(work, work / repo)
        db = work / "tracker.db"
        create_sqlite_db(db, args.rows, seed=1, journal_mode="delete")
        compose = create_tree(work / "site")
        add_blobs(compose / "storage/caddy/data/blobs", count=24)
        config = write_config(work, "bench", db, compose)
        size = db.stat().st_size / 1e6
        lines = [f"Database: {args.rows:,} torrents, {size:.0f} MB; {os.cpu_count()} cores.", ""]
        if "a" in args.cases:
            lines += table("(a) database after a day of tracker-like writes",
                           case(work, config, "database", db,
                                lambda: tracker_day(db, args.rows)))
        if "b" in args.cases:
            lines += table("(b) selective tree, a few small files changed",
                           case(work, config, "selective", compose,
                                lambda: touch_a_few(compose)))
    text = "\n".join(lines)
    publish(text, args.out)


if __name__ == "__main__":
    main()
