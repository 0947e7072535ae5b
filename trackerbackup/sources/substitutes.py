"""Live SQLite databases inside an archived tree: found by their header, never read raw.

Any regular file that starts with the SQLite header is a database (the tracker's
tracker.db, Grafana's grafana.db, whatever a deployment adds), whatever its name. Its
`-wal`, `-shm` and `-journal` are left out (in a directory listing, sorted, they come
after the database itself); the database becomes an archive member at its own path whose
content is a consistent, checked snapshot (`trackerbackup.sqlite.snapshot`) and whose
owner, mode and mtime are the live file's. The snapshot is frozen against the containers
that mount the file (found from their mounts, `docker.containers_mounting`); a file no
running container mounts needs no freezer.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trackerbackup import sqlite
from trackerbackup.docker import Container, Docker, containers_mounting
from trackerbackup.errors import EnvironmentProblem
from trackerbackup.freeze import freezer_factory
from trackerbackup.log import Event, fields, get_logger, printable
from trackerbackup.sources.files import FILE_FLAGS, TarWriter
from trackerbackup.sources.walk import Entry, member_name, open_entry
from trackerbackup.sqlite.header import SQLITE_MAGIC

log = get_logger()
JOURNAL_SUFFIXES = ("-wal", "-shm", "-journal")
MIN_PAGE = 512
SOURCE_KEYS = "[storage] exclude"
Mounted = list[tuple[Container, list[dict[str, Any]]]]


def is_database(entry: Entry) -> bool:
    """A regular file that starts with the SQLite header (an empty file is not one).

    SQLite files are whole pages (of 512 bytes to 64 KiB; sqlite.org/fileformat.html), so
    a size that is not a multiple of 512 rules a file out without opening it: most small
    files of a tree are never opened twice."""
    size = entry.st.st_size
    if not stat.S_ISREG(entry.st.st_mode) or size < MIN_PAGE or size % MIN_PAGE:
        return False
    fd = open_entry(entry, FILE_FLAGS, "file")
    if fd is None:
        return False  # vanished: the archive writer names it
    try:
        return os.pread(fd, len(SQLITE_MAGIC), 0) == SQLITE_MAGIC
    finally:
        os.close(fd)


class DatabaseSubstitutes:
    """Recognises databases and their journals in a walk; snapshots each into the tar."""

    def __init__(self, docker: Docker, run_dir: Path, policy: sqlite.SqlitePolicy,
                 scratch: Callable[[str], Path]) -> None:
        self._docker = docker
        self._run_dir = run_dir
        self._policy = policy
        self._scratch = scratch
        self._mounted: Mounted | None = None
        self._databases: set[str] = set()
        self.records: list[dict[str, Any]] = []
        self.warnings: list[str] = []

    def is_journal(self, entry: Entry) -> bool:
        """`entry` is the -wal, -shm or -journal of a database met earlier in the walk."""
        if not self._databases or not entry.name.endswith(JOURNAL_SUFFIXES):
            return False
        return any(entry.name.endswith(suffix) and entry.path[:-len(suffix)] in self._databases
                   for suffix in JOURNAL_SUFFIXES)

    def take(self, entry: Entry, tar: TarWriter) -> bool:
        """True when the raw walk must leave `entry` out: a journal of a database
        (skipped), or a database (its snapshot is added to `tar` instead)."""
        if self.is_journal(entry):
            return True
        if not is_database(entry):
            return False
        self._databases.add(entry.path)
        self.add(entry, tar)
        return True

    def add(self, entry: Entry, tar: TarWriter) -> None:
        """Snapshot the database `entry` and add it to `tar` at its own path."""
        if not self._same_file(entry):
            self.warnings.append(f"database changed while read, not archived: "
                                 f"{printable(entry.path)}")
            return
        containers = containers_mounting(self._mounts(), Path(entry.path))
        scratch = self._scratch(f"sqlite-{len(self.records)}")
        try:
            report = sqlite.snapshot(Path(entry.path), scratch, self._policy,
                                     freezer_factory(self._docker, containers, self._run_dir),
                                     source_keys=SOURCE_KEYS)
            with open(scratch, "rb") as content:
                tar.add_substitute(entry, content, report.size_bytes)
        finally:
            scratch.unlink(missing_ok=True)
        self._record(entry, containers, report)

    def _same_file(self, entry: Entry) -> bool:
        """The path still leads to the file the walk found (snapshot() opens it by path)."""
        try:
            now = os.stat(entry.path)
        except FileNotFoundError:
            return False
        return (now.st_dev, now.st_ino) == (entry.st.st_dev, entry.st.st_ino)

    def _mounts(self) -> Mounted:
        if self._mounted is None:
            try:
                self._mounted = self._docker.running_mounts()
            except EnvironmentProblem as error:
                # As the database type with sqlite.host_path and no container: the copy
                # still holds SQLite's lock; only an over-budget copy cannot freeze anyone.
                self._mounted = []
                self.warnings.append(f"no container can be frozen for the databases in "
                                     f"the tree ({error.message}); hint: {error.hint}")
        return self._mounted

    def _record(self, entry: Entry, containers: list[Container],
                report: sqlite.SnapshotReport) -> None:
        stall = max(report.lock_held_seconds, report.freeze_seconds)
        names = [c.name for c in containers]
        log.info("snapshot of %s (%s mode, %s): its writers waited at most %.0f ms",
                 entry.path, report.journal_mode, report.strategy, stall * 1000,
                 extra=fields(Event.SNAPSHOT_TAKEN, type="storage", path=entry.path,
                              strategy=report.strategy, journal_mode=report.journal_mode,
                              stall_ms=round(stall * 1000),
                              frozen_ms=round(report.freeze_seconds * 1000),
                              size=report.size_bytes))
        self.records.append({"path": member_name(entry.path), "containers": names,
                             **report.to_manifest()})
