"""A consistent snapshot of a rollback-journal database (the tracker's default mode).

Hold SQLite's SHARED lock and copy the file at full disk speed. Writers cannot commit
while the lock is held (a writer that must spill its cache waits for it too), so the lock
time is the stall they see. The copy runs unfrozen only when it is estimated to fit
`max_writer_stall`, and is abandoned (lock released) as soon as it overruns the budget.
Over the budget the tracker is paused (lock taken first, released before it resumes) or
stopped for the copy through a `Freezer`, or the run fails, as `over_budget` says.

The lock is POSIX (fcntl): it is dropped when this process closes *any* descriptor of
the database file. Every descriptor is therefore opened before the lock is taken and
closed after it is released, and nothing opens the database file inside the lock.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from trackerbackup.errors import EnvironmentProblem
from trackerbackup.kernelcopy import copy_file
from trackerbackup.log import fields, get_logger
from trackerbackup.sqlite.connection import (
    LOCK_ATTEMPTS,
    LOCK_BUSY_TIMEOUT,
    READ_FLAGS,
    WRITE_FLAGS,
    LockBusyOnce,
    open_fd,
    shared_lock,
)
from trackerbackup.sqlite.model import (
    NO_FAULTS,
    OP,
    CopyOutcome,
    FaultPoints,
    Freezer,
    FreezerFactory,
    SqlitePolicy,
)

log = get_logger()

# SQLite's busy handler retries every 100 ms at most: a writer notices our lock is gone
# up to that much later, so the lock itself gets the budget minus this.
WRITER_WAKE_UP_SLACK = 0.1
# While frozen nothing can release a lock, so waiting longer is pointless.
FROZEN_LOCK_BUSY_TIMEOUT = 0.05
FROZEN_ATTEMPTS = 5
FROZEN_RETRY_BACKOFF = 0.1


class _OverBudget(Exception):
    def __init__(self, held: float) -> None:
        super().__init__(f"lock held {held:.3f} s")
        self.held = held


def rollback_copy(
    db_path: Path,
    dest: Path,
    policy: SqlitePolicy,
    freezer: FreezerFactory | None,
    estimate: float,
    faults: FaultPoints = NO_FAULTS,
) -> CopyOutcome:
    held_unfrozen = 0.0
    lock_budget = max(0.0, policy.max_writer_stall - WRITER_WAKE_UP_SLACK)
    if estimate <= lock_budget:
        try:
            return locked_copy(db_path, dest, budget=lock_budget, faults=faults)
        except _OverBudget as over:
            held_unfrozen = over.held
            log.warning(
                "copying %s did not fit the %g s budget (estimated %.2f s): lock released "
                "after %.2f s", db_path, policy.max_writer_stall, estimate, over.held,
                extra=fields(path=db_path, stall_ms=round(over.held * 1000)),
            )
    copy = _over_budget_copy(db_path, dest, policy, freezer, max(estimate, held_unfrozen),
                             faults)
    return CopyOutcome(copy.strategy, copy.copy_method,
                       copy.lock_held_seconds + held_unfrozen, copy.freeze_seconds)


def _over_budget_copy(
    db_path: Path,
    dest: Path,
    policy: SqlitePolicy,
    freezer: FreezerFactory | None,
    estimate: float,
    faults: FaultPoints,
) -> CopyOutcome:
    if policy.over_budget == "fail":
        raise EnvironmentProblem(
            f"a locked copy would stall the database's writers for about {estimate:.1f} s, "
            f"over the {policy.max_writer_stall:g} s budget", op=OP, path=str(db_path),
            hint="switch the database to WAL mode (writers never wait), or raise "
                 "sqlite.max_writer_stall, or set sqlite.over_budget = \"pause\" or \"stop\"",
        )
    if freezer is None:
        log.warning(
            "%s: estimated lock %.1f s exceeds the %g s budget and there is no container "
            "to %s; copying under the lock", db_path, estimate, policy.max_writer_stall,
            policy.over_budget, extra=fields(path=db_path),
        )
        return locked_copy(db_path, dest, budget=None, faults=faults)
    if policy.over_budget == "pause":
        return _paused_copy(db_path, dest, freezer("pause"), faults)
    return _stopped_copy(db_path, dest, freezer("stop"), faults)


def _paused_copy(db_path: Path, dest: Path, freezer: Freezer,
                 faults: FaultPoints) -> CopyOutcome:
    """Takes the lock, pauses, copies, releases the lock, resumes.

    Lock first: a writer paused in the middle of a commit would hold a lock that
    excludes ours. Running writers wait for our lock only while the pause takes effect
    (reported as lock_held_seconds); the lock is released before they run again.
    """
    with ExitStack() as files, ExitStack() as lock:
        source_fd = open_fd(files, db_path, READ_FLAGS)
        target_fd = open_fd(files, dest, WRITE_FLAGS)
        locked_at = lock.enter_context(shared_lock(db_path, LOCK_ATTEMPTS, LOCK_BUSY_TIMEOUT))
        pausing_at = time.monotonic()
        with freezer.frozen():
            paused_at = time.monotonic()
            method = copy_file(source_fd, target_fd, os.fstat(source_fd).st_size,
                               reflink=faults.reflink, before_chunk=faults.before_db_chunk,
                               chunk_bytes=faults.chunk_bytes)
            faults.before_release()
            lock.close()
        resumed_at = time.monotonic()
    return CopyOutcome("locked-copy-paused", method, lock_held_seconds=paused_at - locked_at,
                       freeze_seconds=resumed_at - pausing_at)


def _stopped_copy(db_path: Path, dest: Path, freezer: Freezer,
                  faults: FaultPoints) -> CopyOutcome:
    """Stops the writers, then copies under the lock.

    A stopped tracker holds no lock, but a container found already paused by someone
    else may: then let it go, wait a moment, and try again.
    """
    stopped_total = 0.0
    for attempt in range(1, FROZEN_ATTEMPTS + 1):
        started = time.monotonic()
        try:
            with freezer.frozen():
                copy = locked_copy(db_path, dest, budget=None, attempts=1,
                                   busy_timeout=FROZEN_LOCK_BUSY_TIMEOUT, faults=faults)
        except LockBusyOnce:
            stopped_total += time.monotonic() - started
            log.info("%s: a writer holds the lock while stopped (attempt %d of %d); retrying",
                     db_path, attempt, FROZEN_ATTEMPTS)
            time.sleep(FROZEN_RETRY_BACKOFF * attempt)
            continue
        stopped_total += time.monotonic() - started
        return CopyOutcome("locked-copy-stopped", copy.copy_method, 0.0, stopped_total)
    raise EnvironmentProblem(
        f"a writer held the database lock each of the {FROZEN_ATTEMPTS} times the tracker "
        "was stopped", op=OP, path=str(db_path),
        hint="another program may be using the database; retry later, or switch to WAL",
    )


def locked_copy(
    db_path: Path,
    dest: Path,
    *,
    budget: float | None,
    attempts: int = LOCK_ATTEMPTS,
    busy_timeout: float = LOCK_BUSY_TIMEOUT,
    faults: FaultPoints = NO_FAULTS,
) -> CopyOutcome:
    """Copies the file while holding a SHARED lock; `budget` bounds the lock time.

    The descriptors we copy with are closed only after the connection has released its
    lock (the ExitStack of files is entered first, so it is left last).
    """
    with ExitStack() as files:
        source_fd = open_fd(files, db_path, READ_FLAGS)
        target_fd = open_fd(files, dest, WRITE_FLAGS)
        with shared_lock(db_path, attempts, busy_timeout) as locked_at:
            method = copy_file(source_fd, target_fd, os.fstat(source_fd).st_size,
                               _deadline(locked_at, budget), reflink=faults.reflink,
                               before_chunk=faults.before_db_chunk,
                               chunk_bytes=faults.chunk_bytes)
            faults.before_release()
        held = time.monotonic() - locked_at
    return CopyOutcome("locked-copy", method, lock_held_seconds=held)


def _deadline(locked_at: float, budget: float | None) -> Callable[[], None]:
    def check() -> None:
        if budget is not None and time.monotonic() - locked_at > budget:
            raise _OverBudget(time.monotonic() - locked_at)

    return check
