"""Check that a snapshot equals the initial database plus an exact prefix of the writer's ops.

The writer (writer.py) stores the sequence number of the last committed op in
`_testbed_seq` in the same transaction, and logs every committed op. A consistent snapshot
holding seq N must equal: initial database + ops 1..N replayed in order.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from tests.kit.wait import wait_until
from tests.testbed.writer import apply_op

Tables = dict[str, list[tuple[Any, ...]]]
Op = tuple[int, str, list[Any]]
TRACKER_TABLES = ("whitelist", "torrents", "torrent_aggregate_metrics", "keys", "_testbed_seq")


class PrefixMismatch(AssertionError):
    """The snapshot is not the initial database plus a prefix of the committed ops."""


def read_seq_sqlite(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT seq FROM _testbed_seq WHERE id = 1").fetchone()
    if row is None:
        raise PrefixMismatch(f"{db}: _testbed_seq has no row id=1 (not a test bed database?)")
    return int(row[0])


def read_oplog(oplog: Path, first: int, last: int, wait_s: float = 10.0) -> list[Op]:
    """Ops first..last from the log, waiting up to `wait_s` for the writer to log them
    (it appends an op after its COMMIT)."""

    def ops_in_range() -> list[Op]:
        ops: list[Op] = []
        for line in oplog.read_text(encoding="utf-8").splitlines():
            seq_text, op, args = line.split("\t", 2)
            if first <= int(seq_text) <= last:
                ops.append((int(seq_text), op, json.loads(args)))
        return ops

    def all_logged() -> list[Op] | None:
        ops = ops_in_range()
        return ops if len(ops) >= last - first + 1 else None

    if last < first:
        return []
    try:
        ops = wait_until(all_logged, wait_s, interval=0.1)
    except TimeoutError:
        ops = ops_in_range()
    got = [s for s, _, _ in ops]
    if got != list(range(first, last + 1)):
        raise PrefixMismatch(f"{oplog}: ops {first}..{last} expected in order, found "
                             f"{len(got)} (first {got[:3]}, last {got[-3:]})")
    return ops


def replay(initial_db: Path, oplog: Path, seq: int, dest: Path) -> Path:
    """Copy of the initial database with ops (initial seq + 1)..seq applied, at `dest`."""
    shutil.copyfile(initial_db, dest)
    conn = sqlite3.connect(dest, isolation_level=None)
    try:
        start = int(conn.execute("SELECT seq FROM _testbed_seq WHERE id = 1").fetchone()[0])
        if seq < start:
            raise PrefixMismatch(f"snapshot seq {seq} is older than the initial database's "
                                 f"seq {start}")
        conn.execute("BEGIN")
        cur = conn.cursor()
        for op_seq, op, args in read_oplog(oplog, start + 1, seq):
            apply_op(cur, op, args, op_seq)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return dest


def sqlite_tables(db: Path) -> Tables:
    """Every table (sqlite_sequence included), rows sorted, read-only."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {n: sorted(conn.execute(f'SELECT * FROM "{n}"').fetchall()) for n in names}


def drop_ids(tables: Tables) -> Tables:
    """Rows without their first (id) column, for engines whose ids have gaps (InnoDB)."""
    return {name: sorted(row[1:] for row in rows)
            for name, rows in tables.items() if name in TRACKER_TABLES}


def compare(actual: Tables, expected: Tables, what: str) -> None:
    problems: list[str] = []
    for name in sorted(set(actual) | set(expected)):
        a, e = actual.get(name), expected.get(name)
        if a is None or e is None:
            problems.append(f"table {name}: only in {'expected' if a is None else 'snapshot'}")
        elif a != e:
            sa, se = set(a), set(e)
            problems.append(f"table {name}: {len(sa - se)} rows only in snapshot "
                            f"(e.g. {sorted(sa - se)[:2]}), {len(se - sa)} only in replay "
                            f"(e.g. {sorted(se - sa)[:2]})")
    if problems:
        details = "\n  ".join(problems)
        raise PrefixMismatch(f"{what} differs from initial + op prefix:\n  {details}")


def assert_prefix_consistent(snapshot_db: Path, initial_db: Path, oplog: Path) -> int:
    """Assert an SQLite snapshot == initial DB + ops 1..seq; return that seq."""
    seq = read_seq_sqlite(snapshot_db)
    with tempfile.TemporaryDirectory(prefix="tb-replay-") as tmp:
        expected = sqlite_tables(replay(initial_db, oplog, seq, Path(tmp) / "replay.db"))
    compare(sqlite_tables(snapshot_db), expected, f"snapshot {snapshot_db} (seq {seq})")
    return seq


def assert_tables_prefix_consistent(tables: Tables, initial_db: Path, oplog: Path,
                                    *, ignore_ids: bool = True) -> int:
    """Like assert_prefix_consistent for rows read elsewhere (e.g. a restored MySQL dump).

    `tables` maps the tracker's table names (and `_testbed_seq`) to their rows.
    """
    seq = int(tables["_testbed_seq"][0][1])
    with tempfile.TemporaryDirectory(prefix="tb-replay-") as tmp:
        expected = sqlite_tables(replay(initial_db, oplog, seq, Path(tmp) / "replay.db"))
    expected = {k: v for k, v in expected.items() if k in TRACKER_TABLES}
    actual = {k: sorted(tuple(r) for r in v) for k, v in tables.items() if k in TRACKER_TABLES}
    if ignore_ids:
        actual, expected = drop_ids(actual), drop_ids(expected)
    compare(actual, expected, f"tables (seq {seq})")
    return seq
