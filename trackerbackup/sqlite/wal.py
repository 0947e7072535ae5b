"""A consistent snapshot of a WAL database: the database file and its -wal copied at disk
speed under one read transaction, then the copy checkpointed into one file.

Why the result is the database after exactly k commits, k >= the commits made before the
read transaction began (the snapshot S), whatever writers and checkpointers do meanwhile.
The read transaction holds one of SQLite's WAL read locks (see "wal-index" in SQLite's
file format documentation and walTryBeginRead/walCheckpoint/walRestartLog in wal.c):

- Read mark 0: taken only when every WAL frame was already backfilled, so the database
  file alone holds S. A checkpoint must lock read mark 0 exclusively before it writes or
  truncates the database file, so the file stays exactly S while we hold it. Nothing
  protects the -wal, though: the next writer may restart the WAL and overwrite it from
  the start with a new salt, or a TRUNCATE checkpoint may cut it to 0 bytes. A copy that
  straddles such a restart holds an old header and old frames followed by new ones; the
  copy's recovery accepts the old prefix (valid checksums under the old salt) and would
  replay long-backfilled page versions over the newer database file (the stale-snapshot
  bug this module once had). At most one restart can happen while we hold mark 0: after
  it, nothing can be backfilled (that needs mark 0), and a restart needs a fully
  backfilled, non-empty WAL. The restart rewrites the header (salt-1 is incremented, so
  it never reads the same again), and it happens only as the first write after S, so
  a -wal copied wholly before or wholly after it replays commits that follow S in order.
- Read mark i >= 1: checkpoints backfill only frames at or before our mark, and the WAL
  cannot be restarted or truncated while the mark is held. Every page that changes in
  the database file under the copy therefore also sits in the copied -wal, which the
  copy's recovery replays up to its last valid commit; frames appended during the copy
  are either whole commits or fail their checksums and are ignored (a torn last frame).
  A checkpoint may shorten the database file under the copy (when it backfills all of
  the WAL); the pages it cuts belong to no state at or after S, so the copy stops at
  the end of the file.

So: read the -wal's 32-byte header just before copying it and again just after, both
inside the read transaction, and compare both with the header of the copy. If all three
agree, no restart touched the copy (and under mark >= 1 they always agree): the copy's
-wal is replayed. If not, a restart happened, which proves we hold mark 0, and the
database file alone is the snapshot: the copied -wal is thrown away. The comparison must
happen before the transaction ends: afterwards a -wal that the copy needs may restart too.

No check of the result could tell these cases apart (the pages are well formed, only
old), so the proof is this argument plus the forced interleavings in the tests.
Writers never wait for a WAL reader. A FULL, RESTART or TRUNCATE checkpoint run by
someone else waits for our read transaction to end, and holds the write lock while it
waits: a tracker that runs those would stall for the length of our copy (the tracker's
driver runs only PASSIVE auto-checkpoints).
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import ExitStack
from pathlib import Path

from trackerbackup.errors import BackupFailed
from trackerbackup.kernelcopy import copy_file
from trackerbackup.log import fields, get_logger
from trackerbackup.sqlite.connection import (
    READ_FLAGS,
    WRITE_FLAGS,
    closing,
    connect,
    open_fd,
    read_only_uri,
    read_transaction,
    wal_of,
)
from trackerbackup.sqlite.model import NO_FAULTS, OP, CopyOutcome, FaultPoints
from trackerbackup.sqlite.verify import corrupt

log = get_logger()

WAL_HEADER_SIZE = 32
WAL_MAGICS = (0x377F0682, 0x377F0683)


def wal_pinned_copy(db_path: Path, dest: Path, faults: FaultPoints = NO_FAULTS) -> CopyOutcome:
    with ExitStack() as files:  # closed after the connection: see connection.py
        source_fd = open_fd(files, db_path, READ_FLAGS)
        target_fd = open_fd(files, dest, WRITE_FLAGS)
        with closing(wal_reader(db_path)) as reader, read_transaction(reader, db_path):
            method = copy_file(source_fd, target_fd, os.fstat(source_fd).st_size,
                               until_eof=True, reflink=faults.reflink,
                               before_chunk=faults.before_db_chunk,
                               chunk_bytes=faults.chunk_bytes)
            wal_used = _copy_wal_if_unrestarted(files, db_path, dest, faults)
            faults.before_release()
    if not wal_used:
        wal_of(dest).unlink(missing_ok=True)
    _checkpoint_copy(dest)
    return CopyOutcome("wal-pinned-copy", method, wal_frames_used=wal_used)


def _copy_wal_if_unrestarted(
    files: ExitStack, db_path: Path, dest: Path, faults: FaultPoints
) -> bool:
    """Copies the -wal; True if the copy is to be replayed, False if the database file
    alone is the snapshot (no frames, or the WAL restarted around the copy)."""
    try:
        wal_fd = open_fd(files, wal_of(db_path), READ_FLAGS)
    except FileNotFoundError:
        return False
    before = wal_header(wal_fd)
    if before is None:
        return False  # no frames: only read mark 0 is possible
    copy_fd = open_fd(files, wal_of(dest), WRITE_FLAGS)
    copy_file(wal_fd, copy_fd, os.fstat(wal_fd).st_size, until_eof=True,
              reflink=faults.reflink, before_chunk=faults.before_wal_chunk,
              chunk_bytes=faults.chunk_bytes)
    after = wal_header(wal_fd)
    copied = _wal_header_of(wal_of(dest))
    if before == after == copied:
        return True
    log.info("%s: the WAL restarted during the copy; the database file alone is the "
             "snapshot (read mark 0)", db_path, extra=fields(path=db_path))
    return False


def wal_header(fd: int) -> bytes | None:
    """The -wal's header, or None when it has none (empty, truncated, not a WAL)."""
    header = os.pread(fd, WAL_HEADER_SIZE, 0)
    if len(header) < WAL_HEADER_SIZE or int.from_bytes(header[:4], "big") not in WAL_MAGICS:
        return None
    return header


def _wal_header_of(path: Path) -> bytes | None:
    fd = os.open(path, READ_FLAGS)
    try:
        return wal_header(fd)
    finally:
        os.close(fd)


def _checkpoint_copy(dest: Path) -> None:
    try:
        with closing(connect(dest)) as copy:
            # No fsync of the whole copy here: the caller stores it (and syncs that).
            copy.execute("PRAGMA synchronous = OFF")
            busy = copy.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    except sqlite3.Error as error:
        raise corrupt(dest, "wal_checkpoint", str(error)) from error
    if busy:
        raise BackupFailed("the copy's WAL could not be checkpointed", op=OP, path=str(dest))
    wal_of(dest).unlink(missing_ok=True)


def wal_reader(db_path: Path) -> sqlite3.Connection:
    wal_files_exist = all(
        Path(f"{db_path}{suffix}").exists() for suffix in ("-wal", "-shm")
    )
    if wal_files_exist:
        return connect(read_only_uri(db_path), uri=True)
    # Read-write so that, if we are its last user, SQLite removes the -wal and -shm it
    # creates when we close (a read-only connection would leave them behind).
    return connect(db_path)
