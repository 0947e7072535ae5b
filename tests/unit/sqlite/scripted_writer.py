"""A writer in another process, driven step by step, for forced interleavings.

SQLite's locks are POSIX locks, which a process shares among its own descriptors: only a
writer in another process sees our locks as the tracker does. `ScriptedWriter` starts
this file as a child and sends it one command at a time; each answers one line.

Every commit i (1, 2, ...) sets counter.n = i, inserts log row i with a 3 KB blob, and
sets slots[i % 60].v = i, so the state after exactly k commits can be recognised from
the database alone (`commits_in`).
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

SCHEMA = """
CREATE TABLE counter (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL);
CREATE TABLE log (i INTEGER PRIMARY KEY, blob BLOB NOT NULL);
CREATE TABLE slots (id INTEGER PRIMARY KEY, v INTEGER NOT NULL);
INSERT INTO counter VALUES (1, 0);
"""
SLOTS = 60
BLOB_BYTES = 3000


class InconsistentSnapshot(AssertionError):
    pass


def commits_in(db: Path) -> int:
    """k such that the database is exactly the state after k commits; raises otherwise."""
    connection = sqlite3.connect(db, isolation_level=None, timeout=5)
    try:
        connection.execute("BEGIN")  # one read transaction: one state, even of a live file
        k = connection.execute("SELECT n FROM counter").fetchone()[0]
        ids = [row[0] for row in connection.execute("SELECT i FROM log ORDER BY i")]
        slots = dict(connection.execute("SELECT id, v FROM slots").fetchall())
    finally:
        connection.close()
    expected_slots = {j: last for j in range(SLOTS)
                      if (last := k - (k - j) % SLOTS) >= 1}
    if ids != list(range(1, k + 1)) or slots != expected_slots:
        raise InconsistentSnapshot(
            f"counter says {k} commits, but log holds {len(ids)} rows "
            f"(last {ids[-1:]}) and slots differ in "
            f"{sum(slots.get(j) != v for j, v in expected_slots.items())} of {SLOTS}")
    return int(k)


class ScriptedWriter:
    """The parent's handle: `send("commit 5")` returns the child's answer."""

    def __init__(self, db: Path, journal_mode: str, *extra: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, str(db), journal_mode, *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.committed = 0
        self.expect("ready")

    def send(self, command: str) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.answer()

    def send_no_wait(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def answer(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if line.startswith("commits "):
            self.committed = int(line.split()[1])
        return line

    def expect(self, answer: str) -> None:
        got = self.answer()
        assert got == answer, f"scripted writer answered {got!r}, expected {answer!r}"

    def commit(self, count: int) -> None:
        assert self.send(f"commit {count}").startswith("commits ")

    def stop(self) -> str:
        """Ends a free-running writer (SIGTERM) and returns its last line."""
        self.process.terminate()
        last = self.answer()
        self.process.wait(timeout=30)
        return last

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            self.process.wait(timeout=30)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)


# ------------------------------------------------------------------------ the child side


def _one_commit(connection: sqlite3.Connection, blob_bytes: int = BLOB_BYTES) -> int:
    connection.execute("BEGIN IMMEDIATE")
    n = connection.execute("UPDATE counter SET n = n + 1 RETURNING n").fetchone()[0]
    connection.execute("INSERT INTO log VALUES (?, randomblob(?))", (n, blob_bytes))
    connection.execute("INSERT INTO slots VALUES (?, ?) ON CONFLICT (id) DO UPDATE "
                       "SET v = excluded.v", (n % SLOTS, n))
    connection.execute("COMMIT")
    return int(n)


def _torn_frame(db: str) -> str:
    """Writes half of the next WAL frame (valid salts, wrong checksum), as a writer
    interrupted in its write() would leave it."""
    wal = db + "-wal"
    with open(wal, "r+b") as file:
        header = file.read(32)
        page_size = int.from_bytes(header[8:12], "big")
        salts = header[16:24]
        frame = 24 + page_size
        offset = 32
        while True:
            file.seek(offset)
            frame_header = file.read(24)
            if len(frame_header) < 24 or frame_header[8:16] != salts:
                break
            offset += frame
        file.seek(offset)
        file.write(b"\0\0\0\x02\0\0\0\0" + salts + b"\xde\xad\xbe\xef" * 2
                   + os.urandom(page_size // 2))
    return f"torn at {offset}"


def _open(db: str, journal_mode: str) -> sqlite3.Connection:
    connection = sqlite3.connect(db, isolation_level=None, timeout=0)
    connection.execute("PRAGMA synchronous = OFF")
    connection.execute(f"PRAGMA journal_mode = {journal_mode}")
    connection.execute("PRAGMA wal_autocheckpoint = 0")
    if connection.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0] == 0:
        connection.executescript(SCHEMA)
    return connection


def _run_freely(db: str, seed: int) -> None:
    """Until SIGTERM: bursts of small commits, each burst followed by a checkpoint of a
    random mode (so the WAL is fully backfilled, restarted and truncated all the time),
    with pauses of 2 to 10 ms. Prints the number of commits when stopped."""
    connection = _open(db, "wal")
    rng = random.Random(seed)
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    print("ready", flush=True)
    committed = 0
    while not stop:
        for _ in range(rng.randint(1, 8)):
            committed = _one_commit(connection, blob_bytes=100)
        mode = rng.choice(["PASSIVE", "PASSIVE", "RESTART", "TRUNCATE", "NONE"])
        if mode != "NONE":
            connection.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        time.sleep(0.002 + rng.random() * 0.008)
    connection.close()
    print(f"commits {committed}", flush=True)


def _serve(db: str, journal_mode: str, commands: IO[str]) -> None:
    connection = _open(db, journal_mode)
    print("ready", flush=True)
    committed = connection.execute("SELECT n FROM counter").fetchone()[0]
    for line in commands:
        verb, *args = line.split()
        try:
            if verb == "commit":
                for _ in range(int(args[0])):
                    committed = _one_commit(connection)
                answer = f"commits {committed}"
            elif verb == "checkpoint":
                busy, log, done = connection.execute(
                    f"PRAGMA wal_checkpoint({args[0]})").fetchone()
                answer = f"checkpoint busy={busy} log={log} backfilled={done}"
            elif verb == "torn":
                answer = _torn_frame(db)
            elif verb == "spill":
                # A transaction larger than the cache: its pages go to the WAL (or, in
                # rollback mode, to the database file under an EXCLUSIVE lock) before
                # COMMIT. It stays open until "rollback" or "commit-open".
                connection.execute(f"PRAGMA busy_timeout = {int(args[0])}")
                connection.execute("PRAGMA cache_size = 2")
                connection.execute("BEGIN")
                connection.execute("UPDATE log SET blob = randomblob(?)", (BLOB_BYTES,))
                answer = "spilled"
            elif verb == "rollback":
                connection.execute("ROLLBACK")
                connection.execute("PRAGMA busy_timeout = 0")
                answer = "rolled back"
            elif verb == "try-commit":
                try:
                    committed = _one_commit(connection)
                    answer = f"commits {committed}"
                except sqlite3.OperationalError as error:
                    if connection.in_transaction:
                        connection.execute("ROLLBACK")
                    answer = f"busy {error}"
            else:
                answer = f"unknown {verb}"
        except sqlite3.Error as error:
            answer = f"error {error}"
        print(answer, flush=True)
    connection.close()


if __name__ == "__main__":
    if sys.argv[2] == "free-run":
        _run_freely(sys.argv[1], int(sys.argv[3]))
    else:
        _serve(sys.argv[1], sys.argv[2], sys.stdin)
