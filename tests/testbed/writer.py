"""A tracker-like writer: small write transactions, recorded so a snapshot can be checked.

Runs inside the tracker stand-in as uid 1000 (`python3 /testbed/writer.py ...`), and as a
child process of the tiers without Docker (tests/kit/local_tracker.py): stdlib only (PyMySQL
for --driver mysql). Per operation, like the real tracker on an `event=completed`
announce: SELECT, then `UPDATE torrents SET completed = completed + 1` (or INSERT of a new
torrent), and the same on torrent_aggregate_metrics row 'torrents_downloads_total';
sometimes an INSERT into whitelist or keys (the REST API's writes).

Verifiability: the same transaction sets `_testbed_seq.seq` to the operation's sequence
number; after COMMIT the operation is appended to the op log (`seq<TAB>op<TAB>json args`).
A snapshot holding seq N must equal the initial database plus ops 1..N (see prefix.py).
Failed writes (e.g. "database is locked" after the 5 s busy timeout) are rolled back,
counted and never logged. A JSON status file is rewritten periodically and on SIGTERM.

Restarts (`docker stop`/`start`, `docker restart`, as trackerbackup's stop window and
`sqlite enable-wal` do): the writer continues the sequence from `_testbed_seq`, appends to
the op log, and carries the counts of the previous status file over (`committed` counts
every commit since the status file was created; `starts` counts the writer's starts). Its
random stream is derived from (seed, starting seq), so neither a restart nor the seed
data (tree.py draws from `random.Random(seed)`) sees the same hashes again.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BUSY_TIMEOUT_S = 5.0  # the tracker's pool: 5 s busy timeout, then the write is lost
METRIC = "torrents_downloads_total"
STATUS_EVERY_S = 0.1

SQLITE_SCHEMA = (
    "CREATE TABLE whitelist (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " info_hash TEXT NOT NULL UNIQUE)",
    "CREATE TABLE torrents (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " info_hash TEXT NOT NULL UNIQUE, completed INTEGER DEFAULT 0 NOT NULL)",
    "CREATE TABLE torrent_aggregate_metrics (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " metric_name TEXT NOT NULL UNIQUE, value INTEGER DEFAULT 0 NOT NULL)",
    "CREATE TABLE keys (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " key TEXT NOT NULL UNIQUE, valid_until INTEGER)",
    "CREATE TABLE _testbed_seq (id INTEGER PRIMARY KEY, seq INTEGER NOT NULL)",
)

MYSQL_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS whitelist (id integer PRIMARY KEY AUTO_INCREMENT,"
    " info_hash VARCHAR(40) NOT NULL UNIQUE) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS torrents (id integer PRIMARY KEY AUTO_INCREMENT,"
    " info_hash VARCHAR(40) NOT NULL UNIQUE, completed INTEGER DEFAULT 0 NOT NULL)"
    " ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS torrent_aggregate_metrics (id integer PRIMARY KEY"
    " AUTO_INCREMENT, metric_name VARCHAR(50) NOT NULL UNIQUE,"
    " value INTEGER DEFAULT 0 NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS `keys` (id integer PRIMARY KEY AUTO_INCREMENT,"
    " `key` VARCHAR(32) NOT NULL UNIQUE, valid_until INTEGER) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS _testbed_seq (id integer PRIMARY KEY,"
    " seq BIGINT NOT NULL) ENGINE=InnoDB",
)


def apply_op(cur: Any, op: str, args: Sequence[Any], seq: int, mark: str = "?") -> None:
    """Run one operation and the seq update on an open transaction (sqlite3 or PyMySQL).

    `mark` is the driver's placeholder ("?" for sqlite3, "%s" for PyMySQL). prefix.py replays
    the op log with this same function.
    """

    def q(sql: str, params: Sequence[Any] = ()) -> list[Any]:
        cur.execute(sql.replace("?", mark), tuple(params))
        return list(cur.fetchall())

    if op == "complete":
        (info_hash,) = args
        if q("SELECT completed FROM torrents WHERE info_hash = ?", (info_hash,)):
            q("UPDATE torrents SET completed = completed + 1 WHERE info_hash = ?", (info_hash,))
        else:
            q("INSERT INTO torrents (info_hash, completed) VALUES (?, 1)", (info_hash,))
        if q("SELECT value FROM torrent_aggregate_metrics WHERE metric_name = ?", (METRIC,)):
            q("UPDATE torrent_aggregate_metrics SET value = value + 1 WHERE metric_name = ?",
              (METRIC,))
        else:
            q("INSERT INTO torrent_aggregate_metrics (metric_name, value) VALUES (?, 1)",
              (METRIC,))
    elif op == "whitelist":
        q("INSERT INTO whitelist (info_hash) VALUES (?)", (args[0],))
    elif op == "key":
        q("INSERT INTO `keys` (`key`, valid_until) VALUES (?, ?)", (args[0], args[1]))
    else:
        raise ValueError(f"unknown op {op!r}")
    q("UPDATE _testbed_seq SET seq = ? WHERE id = 1", (seq,))


class Stats:
    """Committed/failed counts and the latency of each write transaction (ms histogram)."""

    def __init__(self) -> None:
        self.committed = 0
        self.failed = 0
        self.last_seq = 0
        self.max_ms = 0.0
        self.hist: dict[int, int] = {}
        self.errors: list[str] = []
        self.starts = 1
        self.crashed: str | None = None

    def carry_over(self, previous: dict[str, Any]) -> bool:
        """Continue the counts of a previous run of this writer (its last status file)."""
        try:
            self.committed = int(previous["committed"])
            self.last_seq = int(previous["last_seq"])
        except (KeyError, TypeError, ValueError):
            return False
        self.failed = int(previous.get("failed", 0))
        self.max_ms = float(previous.get("max_stall_ms", 0.0))
        self.hist = {int(k): int(v) for k, v in (previous.get("stall_hist") or {}).items()}
        self.errors = [str(e) for e in previous.get("errors", [])][-10:]
        self.starts = int(previous.get("starts", 1)) + 1
        return True

    def record(self, ms: float) -> None:
        self.max_ms = max(self.max_ms, ms)
        self.hist[int(ms)] = self.hist.get(int(ms), 0) + 1

    def p99(self) -> int:
        total = sum(self.hist.values())
        seen = 0
        for bucket in sorted(self.hist):
            seen += self.hist[bucket]
            if seen >= 0.99 * total:
                return bucket + 1
        return 0

    def fail(self, exc: BaseException) -> None:
        self.failed += 1
        text = f"{type(exc).__name__}: {exc}"
        if text not in self.errors:
            self.errors = [*self.errors, text][-10:]


def write_status(path: Path, stats: Stats, running: bool) -> None:
    data = {
        "pid": os.getpid(), "running": running, "committed": stats.committed,
        "failed": stats.failed, "last_seq": stats.last_seq,
        "max_stall_ms": round(stats.max_ms, 2), "p99_stall_ms": stats.p99(),
        "errors": stats.errors, "starts": stats.starts, "crashed": stats.crashed,
        "stall_hist": {str(k): v for k, v in sorted(stats.hist.items())},
        "updated": time.time(),
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data) + "\n")
    tmp.replace(path)


def read_status(path: Path) -> dict[str, Any] | None:
    """The status file a previous run of the writer left, if any (None if unreadable)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def writer_rng(seed: int | None, seq: int) -> random.Random:
    """The op stream of a run starting after `seq`: deterministic per (seed, seq), and
    independent of `random.Random(seed)` (the seed data's stream) and of earlier runs."""
    if seed is None:
        return random.Random()
    return random.Random(f"trackerbackup-testbed-writer/{seed}/{seq}")


def random_hash(rng: random.Random) -> str:
    return f"{rng.getrandbits(160):040x}"


def next_op(rng: random.Random, known: list[str]) -> tuple[str, list[Any]]:
    roll = rng.random()
    if roll < 0.03:
        return "whitelist", [random_hash(rng)]
    if roll < 0.04:
        return "key", [f"{rng.getrandbits(128):032x}", int(time.time()) + 86400]
    if roll < 0.25 or not known:
        new = random_hash(rng)
        known.append(new)
        return "complete", [new]
    return "complete", [rng.choice(known)]


class Sqlite:
    mark = "?"
    # Lock timeouts, and constraint errors (the tracker answers those with an error, it
    # does not die): counted as failed writes.
    errors: tuple[type[BaseException], ...] = (sqlite3.OperationalError,
                                               sqlite3.IntegrityError)

    def __init__(self, db: str, wal_autocheckpoint: int | None = None) -> None:
        self.conn = sqlite3.connect(db, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        if wal_autocheckpoint is not None:
            self.conn.execute(f"PRAGMA wal_autocheckpoint = {int(wal_autocheckpoint)}")

    def begin(self) -> Any:
        # The real tracker runs single statements in autocommit mode, each waiting up to 5 s
        # on a lock; BEGIN IMMEDIATE gives the same wait while keeping the seq atomic.
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn.cursor()

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def query(self, sql: str) -> list[Any]:
        return list(self.conn.execute(sql).fetchall())


class Mysql:
    mark = "%s"

    def __init__(self, host: str, database: str, user: str) -> None:
        import pymysql  # only in --driver mysql

        self.errors: tuple[type[BaseException], ...] = (pymysql.err.MySQLError,)
        password = os.environ.get("MYSQL_PASSWORD", "")
        deadline = time.monotonic() + 120
        while True:
            try:
                self.conn = pymysql.connect(host=host, user=user, password=password,
                                            database=database, autocommit=False)
                break
            except pymysql.err.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        with self.conn.cursor() as cur:
            cur.execute("SET SESSION innodb_lock_wait_timeout = 5")
            cur.execute("SET SESSION lock_wait_timeout = 5")
            for stmt in MYSQL_SCHEMA:
                cur.execute(stmt)
            cur.execute("INSERT IGNORE INTO _testbed_seq (id, seq) VALUES (1, 0)")
        self.conn.commit()

    def begin(self) -> Any:
        self.conn.begin()
        return self.conn.cursor()

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        try:
            self.conn.rollback()
        except Exception:
            self.conn.ping(reconnect=True)

    def query(self, sql: str) -> list[Any]:
        with self.conn.cursor() as cur:
            cur.execute(sql)
            rows = list(cur.fetchall())
        self.conn.commit()
        return rows


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--driver", choices=("sqlite", "mysql"), default="sqlite")
    p.add_argument("--db", default="/var/lib/torrust/tracker/database/tracker.db")
    p.add_argument("--mysql-host", default="mysql")
    p.add_argument("--mysql-database", default="torrust_tracker")
    p.add_argument("--mysql-user", default="torrust")
    p.add_argument("--interval-ms", type=float, default=5.0,
                   help="target period between commits (0 = as fast as possible)")
    p.add_argument("--oplog", default="/var/log/torrust/tracker/testbed-oplog.tsv")
    p.add_argument("--status", default="/var/log/torrust/tracker/testbed-status.json")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--uid", type=int, default=None,
                   help="started as root: run as this uid and gid (the tracker's 1000)")
    p.add_argument("--wal-autocheckpoint", type=int, default=None, metavar="PAGES",
                   help="PRAGMA wal_autocheckpoint (SQLite; default: SQLite's 1000)")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.uid is not None:
        os.setgroups([])
        os.setgid(args.uid)
        os.setuid(args.uid)
    status_path = Path(args.status)
    stats = Stats()
    previous = read_status(status_path)
    continued = previous is not None and stats.carry_over(previous)
    try:
        return run(args, status_path, stats, continued)
    except BaseException as exc:
        # Never leave a status that says "running" behind a dead writer.
        stats.crashed = f"{type(exc).__name__}: {exc}"
        stats.errors = [*stats.errors, f"crashed: {stats.crashed}"][-10:]
        with contextlib.suppress(OSError):
            write_status(status_path, stats, running=False)
        raise


def run(args: argparse.Namespace, status_path: Path, stats: Stats, continued: bool) -> int:
    db: Sqlite | Mysql = (Sqlite(args.db, args.wal_autocheckpoint) if args.driver == "sqlite"
                          else Mysql(args.mysql_host, args.mysql_database, args.mysql_user))
    stop = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    seq = int(db.query("SELECT seq FROM _testbed_seq WHERE id = 1")[0][0])
    if continued and seq > stats.last_seq:
        # The status is rewritten every 0.1 s: after an unclean end it may lag the database.
        stats.committed += seq - stats.last_seq
    stats.last_seq = seq
    rng = writer_rng(args.seed, seq)
    max_id = int(db.query("SELECT COALESCE(MAX(id), 0) FROM torrents")[0][0])
    sample = [rng.randint(1, max_id) for _ in range(min(max_id, 1000))]
    known = [str(r[0]) for r in db.query(
        "SELECT info_hash FROM torrents WHERE id IN (" + ",".join(map(str, sample or [0])) + ")")]
    next_status = 0.0
    with open(args.oplog, "a", buffering=1, encoding="utf-8") as oplog:
        while not stop:
            op, op_args = next_op(rng, known)
            started = time.monotonic()
            try:
                cur = db.begin()
                apply_op(cur, op, op_args, seq + 1, db.mark)
                db.commit()
            except db.errors as exc:
                db.rollback()
                stats.fail(exc)
                if op == "complete" and op_args[0] == known[-1]:
                    known.pop()
            else:
                seq += 1
                oplog.write(f"{seq}\t{op}\t{json.dumps(op_args)}\n")
                stats.committed += 1
                stats.last_seq = seq
            stats.record((time.monotonic() - started) * 1000)
            if time.monotonic() >= next_status:
                write_status(status_path, stats, running=True)
                next_status = time.monotonic() + STATUS_EVERY_S
            pause = started + args.interval_ms / 1000 - time.monotonic()
            if pause > 0:
                time.sleep(pause)
    write_status(status_path, stats, running=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
