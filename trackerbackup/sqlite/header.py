"""What a database file says about itself, read without opening an SQLite connection:
its header (page size, page count, journal mode), its size, the copy rate of its disk,
and so the writer stall a locked copy would cause."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from trackerbackup.errors import EnvironmentProblem
from trackerbackup.sqlite.model import OP, SOURCE_KEYS, JournalMode, SqlitePolicy

SQLITE_MAGIC = b"SQLite format 3\x00"
HEADER_SIZE = 100

# Used when copy_rate_bytes_per_s is None and the file is too small to time a sample.
CONSERVATIVE_COPY_RATE = 100 * 1024 * 1024
RATE_SAMPLE_BYTES = 32 * 1024 * 1024
RATE_SAMPLE_PIECES = 8
# A copy reads and writes every byte; the sample only reads.
COPY_COST_OVER_READ = 2.0


@dataclass(frozen=True)
class SqliteHeader:
    page_size: int
    page_count: int
    journal_mode: JournalMode


@dataclass(frozen=True)
class DatabaseInfo:
    """What `trackerbackup check` shows; `advice` is "" when nothing needs doing."""

    path: Path
    journal_mode: JournalMode
    size_bytes: int
    page_size: int
    page_count: int
    copy_rate_bytes_per_s: float
    estimated_stall_seconds: float
    max_writer_stall: float
    advice: str


def inspect(
    db_path: Path, policy: SqlitePolicy | None = None, *, source_keys: str = SOURCE_KEYS
) -> DatabaseInfo:
    """Reads the header and times a sample read; opens no SQLite connection."""
    policy = policy or SqlitePolicy()
    header = read_header(db_path, source_keys)
    size = db_path.stat().st_size
    rate = copy_rate(db_path, size, policy)
    estimate = estimated_stall(header.journal_mode, size, rate)
    return DatabaseInfo(
        path=db_path,
        journal_mode=header.journal_mode,
        size_bytes=size,
        page_size=header.page_size,
        page_count=header.page_count,
        copy_rate_bytes_per_s=rate,
        estimated_stall_seconds=estimate,
        max_writer_stall=policy.max_writer_stall,
        advice=advice(estimate, policy),
    )


def read_header(db_path: Path, source_keys: str = SOURCE_KEYS) -> SqliteHeader:
    try:
        with open(db_path, "rb") as file:
            raw = file.read(HEADER_SIZE)
    except FileNotFoundError as error:
        raise EnvironmentProblem(
            "the SQLite database does not exist", op=OP, path=str(db_path),
            hint=f"check {source_keys} and that the tracker's storage is mounted",
        ) from error
    except OSError as error:
        raise EnvironmentProblem(
            f"cannot read the SQLite database: {error.strerror}", op=OP, path=str(db_path),
            hint=f"{source_keys} must name a readable database file",
        ) from error
    if len(raw) < HEADER_SIZE or not raw.startswith(SQLITE_MAGIC):
        raise EnvironmentProblem(
            "not an SQLite database (no SQLite header)", op=OP, path=str(db_path),
            hint=f"{source_keys} must name the database file itself, e.g. tracker.db",
        )
    return parse_header(raw, db_path.stat().st_size)


def parse_header(raw: bytes, file_size: int) -> SqliteHeader:
    page_size = int.from_bytes(raw[16:18], "big")
    if page_size == 1:
        page_size = 65536
    # The in-header page count is valid only when written by SQLite >= 3.7.0, which
    # also stores the change counter at offset 92; otherwise derive it from the size.
    page_count = int.from_bytes(raw[28:32], "big")
    if page_count == 0 or raw[24:28] != raw[92:96]:
        page_count = file_size // page_size
    journal_mode: JournalMode = "wal" if raw[18] == 2 or raw[19] == 2 else "rollback"
    return SqliteHeader(page_size, page_count, journal_mode)


def copy_rate(db_path: Path, size: int, policy: SqlitePolicy) -> float:
    if policy.copy_rate_bytes_per_s is not None:
        return policy.copy_rate_bytes_per_s
    return _measured_copy_rate(db_path, size)


def _measured_copy_rate(db_path: Path, size: int) -> float:
    """Times reads of pieces spread over the file, as the copy will meet them."""
    if size < RATE_SAMPLE_BYTES:
        return CONSERVATIVE_COPY_RATE
    piece = RATE_SAMPLE_BYTES // RATE_SAMPLE_PIECES
    stride = (size - piece) // (RATE_SAMPLE_PIECES - 1)
    buffer = bytearray(piece)
    fd = os.open(db_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        started = time.monotonic()
        for index in range(RATE_SAMPLE_PIECES):
            os.preadv(fd, [buffer], index * stride)
        elapsed = time.monotonic() - started
    finally:
        os.close(fd)
    return RATE_SAMPLE_BYTES / max(elapsed, 1e-6) / COPY_COST_OVER_READ


def estimated_stall(journal_mode: JournalMode, size: int, rate: float) -> float:
    return 0.0 if journal_mode == "wal" else size / rate


def advice(estimate: float, policy: SqlitePolicy) -> str:
    if estimate <= policy.max_writer_stall:
        return ""
    consequence = {
        "pause": f"each backup pauses the tracker for about {estimate:.1f} s",
        "stop": f"each backup stops the tracker for about {estimate:.1f} s",
        "fail": "backups fail (sqlite.over_budget = \"fail\")",
    }[policy.over_budget]
    return (
        f"switch the database to WAL: a locked copy would stall the tracker's writers for "
        f"an estimated {estimate:.1f} s, over the {policy.max_writer_stall:g} s budget "
        f"(sqlite.max_writer_stall), so {consequence}; in WAL mode writers never wait"
    )
