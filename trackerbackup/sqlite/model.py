"""The vocabulary shared by the snapshot strategies: policy, freezer, copy outcome."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal, Protocol

from trackerbackup.kernelcopy import COPY_CHUNK_BYTES, ChunkHook

JournalMode = Literal["wal", "rollback"]
OverBudget = Literal["pause", "stop", "fail"]
IntegrityMode = Literal["full", "quick"]

SOURCE_KEYS = "sqlite.host_path or sqlite.path_in_container"
OP = "snapshot sqlite database"


@dataclass(frozen=True)
class SqlitePolicy:
    """How much writers may be stalled, and what to do when a copy would stall them longer.

    copy_rate_bytes_per_s: the copy rate assumed by the estimate. None measures it by
    timing reads of a sample of the file (times COPY_COST_OVER_READ for the writes);
    a wrong estimate costs at most one abandoned attempt, since the unfrozen copy is
    abandoned once it overruns max_writer_stall.
    """

    max_writer_stall: float = 1.0
    over_budget: OverBudget = "pause"
    integrity_check: IntegrityMode = "full"
    copy_rate_bytes_per_s: float | None = None


class Freezer(Protocol):
    """Makes the database's writers wait ("pause") or stops them ("stop") while inside
    `frozen()`, and always lets them run again on leaving it."""

    @property
    def name(self) -> str: ...

    def frozen(self) -> AbstractContextManager[None]: ...


FreezerFactory = Callable[[str], Freezer]


@dataclass(frozen=True)
class CopyOutcome:
    """How a consistent copy was made.

    wal_frames_used: WAL mode only: whether the copy's -wal was replayed (read mark >= 1)
    or the database file alone was the snapshot (the WAL restarted under the copy).
    """

    strategy: str
    copy_method: str
    lock_held_seconds: float = 0.0
    freeze_seconds: float = 0.0
    wal_frames_used: bool = False


def _nothing() -> None:
    return None


def _nothing_at(offset: int) -> None:
    return None


@dataclass(frozen=True)
class FaultPoints:
    """Where tests interleave writers and checkpoints with a copy, deterministically:
    before each chunk of the database file and of the -wal, and just before the read
    transaction (or lock) ends. Production runs with the defaults: no hooks, 8 MiB
    chunks, reflink where the filesystem offers it."""

    before_db_chunk: ChunkHook = _nothing_at
    before_wal_chunk: ChunkHook = _nothing_at
    before_release: Callable[[], None] = _nothing
    chunk_bytes: int = COPY_CHUNK_BYTES
    reflink: bool = True


NO_FAULTS = FaultPoints()
