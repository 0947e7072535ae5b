"""Connections, read transactions and descriptors, with the POSIX-lock rules they obey.

Closing any descriptor of a file drops all of this process's POSIX locks on it, SQLite's
included: every descriptor a strategy copies with is opened before its lock is taken and
closed after the lock is released (`open_fd` into an ExitStack entered first).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from trackerbackup.errors import BackupFailed, EnvironmentProblem
from trackerbackup.sqlite.model import OP

SQLITE_BUSY = 5
SQLITE_FULL = 13
LOCK_BUSY_TIMEOUT = 0.5
LOCK_ATTEMPTS = 4

READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC
# No O_TRUNC (and no ftruncate of written data): on ext4, truncating a file marks it
# for a flush on close, and flushing hundreds of MB at once stalled the tracker's next
# fsync by ~1 s in the benchmark. `open_fd` removes an old copy first instead.
WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


class LockBusyOnce(Exception):
    """The one allowed attempt found the database locked (the caller retries)."""


def connect(
    database: Path | str, *, uri: bool = False, timeout: float = LOCK_BUSY_TIMEOUT
) -> sqlite3.Connection:
    return sqlite3.connect(database, uri=uri, timeout=timeout, isolation_level=None)


@contextmanager
def closing(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    try:
        yield connection
    finally:
        connection.close()


def read_only_uri(db_path: Path) -> str:
    return db_path.absolute().as_uri().replace("file://", "file:", 1) + "?mode=ro"


def wal_of(db_path: Path) -> Path:
    return Path(f"{db_path}-wal")


def open_fd(files: ExitStack, path: Path, flags: int) -> int:
    if flags & os.O_EXCL:
        path.unlink(missing_ok=True)
    fd = os.open(path, flags, 0o600)
    files.callback(os.close, fd)
    return fd


def remove_copy(dest: Path) -> None:
    for path in (dest, wal_of(dest), Path(f"{dest}-shm")):
        path.unlink(missing_ok=True)


def quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


@contextmanager
def shared_lock(db_path: Path, attempts: int, busy_timeout: float) -> Iterator[float]:
    """Holds SQLite's SHARED lock (a read transaction); yields when it was taken."""
    with closing(connect(read_only_uri(db_path), uri=True, timeout=busy_timeout)) as conn, \
            read_transaction(conn, db_path, attempts):
        yield time.monotonic()


@contextmanager
def read_transaction(
    connection: sqlite3.Connection, db_path: Path, attempts: int = LOCK_ATTEMPTS
) -> Iterator[None]:
    _begin_read(connection, db_path, attempts)
    try:
        yield
    finally:
        connection.execute("ROLLBACK")


def _begin_read(connection: sqlite3.Connection, db_path: Path, attempts: int) -> None:
    for attempt in range(1, attempts + 1):
        try:
            connection.execute("BEGIN")
            # The first read takes the lock (or WAL read mark); the transaction keeps it.
            connection.execute("SELECT count(*) FROM sqlite_schema").fetchone()
            return
        except sqlite3.OperationalError as error:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            if getattr(error, "sqlite_errorcode", 0) & 0xFF != SQLITE_BUSY:
                raise sqlite_failure(error, db_path) from error
        except sqlite3.Error as error:
            raise sqlite_failure(error, db_path) from error
        if attempt < attempts:
            time.sleep(0.1 * 2 ** (attempt - 1))
    if attempts == 1:
        raise LockBusyOnce()
    raise EnvironmentProblem(
        f"the database stayed locked by a writer through {attempts} tries", op=OP,
        path=str(db_path), hint="a long write transaction may be running; retry later",
    )


def sqlite_failure(
    error: sqlite3.Error, db_path: Path, op: str = OP
) -> EnvironmentProblem | BackupFailed:
    name = getattr(error, "sqlite_errorname", "")
    if name == "SQLITE_READONLY_ROLLBACK":
        return EnvironmentProblem(
            "the database has a hot journal (a writer crashed mid-transaction)", op=op,
            path=str(db_path),
            hint="let the tracker open the database once (it rolls the journal back), "
                 "then retry",
        )
    if name.startswith("SQLITE_CANTOPEN"):
        return EnvironmentProblem(
            f"cannot open the database or create its -wal/-shm: {error}", op=op,
            path=str(db_path),
            hint=f"a WAL database whose -wal and -shm do not exist needs a writable "
                 f"directory to be read: make {db_path.parent} writable for trackerbackup "
                 f"(not a read-only mount; for the unit: 'systemctl edit "
                 f"trackerbackup@.service', [Service] ReadWritePaths={db_path.parent})",
        )
    if isinstance(error, sqlite3.DatabaseError) and name in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
        return EnvironmentProblem(f"the database cannot be read: {error}", op=op,
                                  path=str(db_path),
                                  hint="run 'PRAGMA integrity_check' on it")
    return BackupFailed(f"SQLite error: {error} ({name or 'unknown'})", op=op, path=str(db_path))
