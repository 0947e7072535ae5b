"""Consistent snapshots of live SQLite databases, at disk speed, without failing a write.

Usable for any SQLite file (the tracker's database, Grafana's grafana.db). The journal
mode is read from the file header on every run:

- WAL (`wal.py`): a read transaction pins a snapshot while the database file and its -wal
  are copied at disk speed; the copy is then checkpointed into one file. Readers never
  block WAL writers. (Measured on 5 M rows: the online backup API in one step took 3-7x
  as long as `cp`, VACUUM INTO about 25x.) Why that is consistent: wal.py's docstring.
- Rollback journal (`rollback.py`, the tracker's default): a SHARED lock held for a
  kernel copy of the file, within the writer-stall budget, else with the tracker paused
  or stopped.

Then `verify.py`: integrity_check (or quick_check) must say exactly "ok". `header.py`
reads what `check` shows without opening a connection.

Files left in the database's directory: none of ours. As root, SQLite's unix VFS hands
any journal, -wal or -shm it creates to the database file's owner (verified by the
tests), and a read-only connection on a WAL database is used only when the -wal and
-shm files already exist, because a read-only connection cannot remove them on close.
"""

from trackerbackup.sqlite.header import DatabaseInfo, SqliteHeader, inspect, read_header
from trackerbackup.sqlite.model import (
    NO_FAULTS,
    FaultPoints,
    Freezer,
    FreezerFactory,
    IntegrityMode,
    JournalMode,
    OverBudget,
    SqlitePolicy,
)
from trackerbackup.sqlite.snapshot import SnapshotReport, enable_wal, snapshot
from trackerbackup.sqlite.verify import Verification, verify_snapshot

__all__ = [
    "NO_FAULTS",
    "DatabaseInfo",
    "FaultPoints",
    "Freezer",
    "FreezerFactory",
    "IntegrityMode",
    "JournalMode",
    "OverBudget",
    "SnapshotReport",
    "SqliteHeader",
    "SqlitePolicy",
    "Verification",
    "enable_wal",
    "inspect",
    "read_header",
    "snapshot",
    "verify_snapshot",
]
