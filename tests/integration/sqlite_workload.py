"""A tracker-shaped SQLite database and a writer that behaves like the tracker.

Shared by tests/integration/test_sqlite_live.py and bench/sqlite_snapshot.py.
Run as a script (`python3 sqlite_workload.py writer ...`) it is the writer process:
one small transaction every few milliseconds, as a tracker does on `event=completed`
announces, each numbered in `_seq` and logged to an op log after its commit, so a
snapshot can be checked against an exact prefix of the committed sequence.

Only the standard library here: the writer runs as a separate interpreter.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

SCHEMA = """
CREATE TABLE whitelist (id INTEGER PRIMARY KEY AUTOINCREMENT, info_hash TEXT NOT NULL UNIQUE);
CREATE TABLE torrents (id INTEGER PRIMARY KEY AUTOINCREMENT, info_hash TEXT NOT NULL UNIQUE,
                       completed INTEGER DEFAULT 0 NOT NULL);
CREATE TABLE torrent_aggregate_metrics (id INTEGER PRIMARY KEY AUTOINCREMENT,
                       metric_name TEXT NOT NULL UNIQUE, value INTEGER DEFAULT 0 NOT NULL);
CREATE TABLE keys (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE,
                   valid_until INTEGER);
CREATE TABLE _seq (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL);
"""
METRIC = "torrents_downloads_total"
TRACKER_UID = 1000


def info_hash(number: int) -> str:
    return hashlib.sha1(str(number).encode()).hexdigest()


def build_tracker_db(path: Path, rows: int, journal_mode: str = "delete") -> None:
    """A tracker database with `rows` torrents (3% completed), built in one transaction."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA synchronous = OFF")
        connection.execute("PRAGMA cache_size = -262144")
        connection.executescript(SCHEMA)
        connection.execute("BEGIN")
        # Inserted in info_hash order, the UNIQUE index grows at its end: minutes faster
        # than random order for millions of rows, and the same file shape.
        torrents = sorted((info_hash(n), n % 7 if n % 33 == 0 else 0)
                          for n in range(1, rows + 1))
        connection.executemany("INSERT INTO torrents (info_hash, completed) VALUES (?, ?)",
                               torrents)
        del torrents
        connection.executemany("INSERT INTO whitelist (info_hash) VALUES (?)",
                               ((info_hash(-n),) for n in range(1, 301)))
        connection.executemany("INSERT INTO keys (key, valid_until) VALUES (?, ?)",
                               ((f"key{n:029d}", 1_900_000_000 + n) for n in range(10)))
        connection.execute("INSERT INTO torrent_aggregate_metrics (metric_name, value) "
                           "VALUES (?, 0)", (METRIC,))
        connection.execute("INSERT INTO _seq (id, value) VALUES (1, 0)")
        connection.execute("COMMIT")
        connection.execute(f"PRAGMA journal_mode = {journal_mode}")
    finally:
        connection.close()


def chown_tree_to_tracker(directory: Path) -> None:
    """Makes `directory` look like the tracker's: 1000:1000, setgid, mode 2770."""
    for path in [directory, *directory.iterdir()]:
        os.chown(path, TRACKER_UID, TRACKER_UID)
    os.chmod(directory, 0o2770)


# ------------------------------------------------------------------------ the writer


@dataclass(frozen=True)
class WriterStats:
    commits: int
    failures: int
    errors: list[str]
    max_latency_ms: float
    p99_latency_ms: float
    max_gap_ms: float

    @classmethod
    def from_file(cls, path: Path) -> WriterStats:
        data = json.loads(path.read_text())
        return cls(**data)


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def one_transaction(connection: sqlite3.Connection, seq: int, rows: int,
                    chooser: random.Random) -> tuple[str, str]:
    """The tracker's write on a completed announce; returns the op for the log."""
    if chooser.random() < 0.1:
        wanted = hashlib.sha1(f"new-{seq}".encode()).hexdigest()
    else:
        wanted = info_hash(chooser.randint(1, rows))
    connection.execute("BEGIN")
    found = connection.execute("SELECT completed FROM torrents WHERE info_hash = ?",
                               (wanted,)).fetchone()
    if found is None:
        connection.execute("INSERT INTO torrents (info_hash, completed) VALUES (?, 1)",
                           (wanted,))
        op = "insert"
    else:
        connection.execute("UPDATE torrents SET completed = completed + 1 WHERE info_hash = ?",
                           (wanted,))
        op = "update"
    connection.execute("UPDATE torrent_aggregate_metrics SET value = value + 1 "
                       "WHERE metric_name = ?", (METRIC,))
    connection.execute("UPDATE _seq SET value = ? WHERE id = 1", (seq,))
    connection.execute("COMMIT")
    return op, wanted


def run_writer(db: Path, oplog: Path, stats: Path, rows: int, interval: float,
               uid: int | None, autocheckpoint: int | None) -> None:
    # Opened before dropping privileges: the test's directory is root's.
    log = open(oplog, "a")  # noqa: SIM115 - closed below, after the loop
    stats_file = open(stats, "w")  # noqa: SIM115
    if uid is not None:
        os.setgid(uid)
        os.setuid(uid)
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    connection = sqlite3.connect(db, timeout=5, isolation_level=None)
    if autocheckpoint is not None:
        connection.execute(f"PRAGMA wal_autocheckpoint = {autocheckpoint}")
    seq = connection.execute("SELECT value FROM _seq").fetchone()[0]
    chooser = random.Random(seq)
    latencies: list[float] = []
    gaps: list[float] = []
    errors: list[str] = []
    last_commit = time.monotonic()
    with log, stats_file:
        while not stopping:
            started = time.monotonic()
            try:
                op, wanted = one_transaction(connection, seq + 1, rows, chooser)
            except sqlite3.Error as error:
                errors.append(f"{type(error).__name__}: {error}")
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
            else:
                seq += 1
                now = time.monotonic()
                latencies.append(now - started)
                gaps.append(now - last_commit)
                last_commit = now
                log.write(f"{seq} {op} {wanted}\n")
                log.flush()
            time.sleep(interval)
        connection.close()
        result = WriterStats(commits=len(latencies), failures=len(errors), errors=errors[:20],
                             max_latency_ms=max(latencies, default=0.0) * 1000,
                             p99_latency_ms=percentile(latencies, 0.99) * 1000,
                             max_gap_ms=max(gaps, default=0.0) * 1000)
        stats_file.write(json.dumps(result.__dict__))


class Writer:
    """The writer as a child process; `stop()` returns its statistics."""

    def __init__(self, db: Path, rows: int, workdir: Path, *, interval: float = 0.005,
                 uid: int | None = None, autocheckpoint: int | None = None) -> None:
        self.oplog = workdir / f"{db.name}.oplog"
        self.stats = workdir / f"{db.name}.stats.json"
        self.oplog.unlink(missing_ok=True)
        self.stats.unlink(missing_ok=True)
        command = [sys.executable, __file__, "writer", "--db", str(db), "--oplog",
                   str(self.oplog), "--stats", str(self.stats), "--rows", str(rows),
                   "--interval", str(interval)]
        if uid is not None:
            command += ["--uid", str(uid)]
        if autocheckpoint is not None:
            command += ["--autocheckpoint", str(autocheckpoint)]
        self.process = subprocess.Popen(command)

    @property
    def pid(self) -> int:
        return self.process.pid

    def committed(self) -> int:
        try:
            return self.oplog.read_bytes().count(b"\n")
        except FileNotFoundError:
            return 0

    def wait_for_commits(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        target = self.committed() + count
        while self.committed() < target:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"the writer did not commit {count} transactions")
            time.sleep(0.01)

    def stop(self) -> WriterStats:
        os.kill(self.pid, signal.SIGCONT)
        self.process.terminate()
        self.process.wait(timeout=30)
        return WriterStats.from_file(self.stats)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGCONT)
            self.process.kill()
            self.process.wait()


# ------------------------------------------------------------------- the freezer double


def process_state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


class SignalFreezer:
    """A `Freezer` that really freezes a local writer: SIGSTOP, then always SIGCONT."""

    def __init__(self, pid: int, name: str = "pause") -> None:
        self.name = name
        self.pid = pid
        self.times_frozen = 0

    @contextmanager
    def frozen(self) -> Iterator[None]:
        os.kill(self.pid, signal.SIGSTOP)
        try:
            while process_state(self.pid) not in ("T", "t"):
                time.sleep(0.001)
            self.times_frozen += 1
            yield
        finally:
            os.kill(self.pid, signal.SIGCONT)


# --------------------------------------------------------------------- replay, compare


def applied_seq(db: Path) -> int:
    connection = sqlite3.connect(db)
    try:
        value: int = connection.execute("SELECT value FROM _seq").fetchone()[0]
        return value
    finally:
        connection.close()


def replay(initial: Path, oplog: Path, upto: int, into: Path) -> None:
    """`initial` with the logged ops 1..upto applied, written to `into`."""
    shutil.copyfile(initial, into)
    connection = sqlite3.connect(into, isolation_level=None)
    try:
        connection.execute("BEGIN")
        for line in oplog.read_text().splitlines()[:upto]:
            seq, op, wanted = line.split()
            if op == "insert":
                connection.execute("INSERT INTO torrents (info_hash, completed) VALUES (?, 1)",
                                   (wanted,))
            else:
                connection.execute("UPDATE torrents SET completed = completed + 1 "
                                   "WHERE info_hash = ?", (wanted,))
            connection.execute("UPDATE torrent_aggregate_metrics SET value = value + 1 "
                               "WHERE metric_name = ?", (METRIC,))
            connection.execute("UPDATE _seq SET value = ? WHERE id = 1", (int(seq),))
        connection.execute("COMMIT")
    finally:
        connection.close()


def table_digests(db: Path) -> dict[str, str]:
    """sha256 of every table's rows in rowid order, sqlite_sequence included."""
    connection = sqlite3.connect(db)
    try:
        names = [row[0] for row in connection.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")]
        digests = {}
        for name in names:
            digest = hashlib.sha256()
            for row in connection.execute(f'SELECT * FROM "{name}" ORDER BY rowid'):
                digest.update(repr(row).encode())
            digests[name] = digest.hexdigest()
        return digests
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    writer = sub.add_parser("writer")
    writer.add_argument("--db", type=Path, required=True)
    writer.add_argument("--oplog", type=Path, required=True)
    writer.add_argument("--stats", type=Path, required=True)
    writer.add_argument("--rows", type=int, required=True)
    writer.add_argument("--interval", type=float, default=0.005)
    writer.add_argument("--uid", type=int)
    writer.add_argument("--autocheckpoint", type=int, help="PRAGMA wal_autocheckpoint")
    args = parser.parse_args()
    run_writer(args.db, args.oplog, args.stats, args.rows, args.interval, args.uid,
               args.autocheckpoint)


if __name__ == "__main__":
    main()
