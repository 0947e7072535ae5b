"""The storage type: the whole deployment in one archive that brings a tracker back.

One streamed tar (`files.TarWriter`, walked by `walk.py`) of the storage tree
(general.storage_dir, default <compose_dir>/storage) and the compose directory's
docker-compose.yml and .env. Every SQLite database in the tree is replaced by a
consistent snapshot at its own path (`substitutes.py`); the manifest lists each
substitution. Left out: the backup directory when it lies inside the tree, the operator's
`[storage] exclude` patterns, and a server database's datadir (`DATADIRS`), which cannot
be copied consistently from the outside: with tracker.driver = "mysql" its consistent dump
is added instead (`storage_mysql.py`).

Files that change while read are archived as read and named in the warnings; unlike the
selective type, one that shrinks (a log truncated by logrotate) is padded with zeros
instead of failing the run, since a disaster-recovery archive must not be lost to a log.
"""

from __future__ import annotations

import stat

from trackerbackup.config import Config, TypeSettings
from trackerbackup.docker import Docker
from trackerbackup.errors import EnvironmentProblem
from trackerbackup.log import Event, fields, get_logger
from trackerbackup.mysql import MysqlServer
from trackerbackup.repository import PartialBackup
from trackerbackup.sources import Plan, SourceResult
from trackerbackup.sources.database import sqlite_policy
from trackerbackup.sources.files import TarWriter, resolve
from trackerbackup.sources.storage_mysql import add_dump, dump_dir
from trackerbackup.sources.substitutes import DatabaseSubstitutes, is_database
from trackerbackup.sources.walk import FileSet, member_name
from trackerbackup.stream import SUFFIX

log = get_logger()
COMPOSE_FILES = ("docker-compose.yml", ".env")
# tracker.driver -> its server's datadir (relative to the storage tree), never archived
# raw. Its consistent dump is the MySQL source's (issue 11), added by `storage_mysql`.
DATADIRS = {"mysql": "mysql/data"}
SETID_BITS = stat.S_ISUID | stat.S_ISGID


def storage_files(config: Config, settings: TypeSettings) -> FileSet:
    """The storage tree and the compose files, minus the backup dir and any datadir."""
    storage = config.general.storage
    resolved = resolve(config, settings, (str(storage), *COMPOSE_FILES))
    datadir = DATADIRS.get(config.tracker.driver)
    # The dump's own directory too: a restore in place leaves the dump there.
    extra = (storage / datadir, dump_dir(storage)) if datadir else ()
    return FileSet(roots=resolved.roots, missing=resolved.missing,
                   exclude_patterns=resolved.exclude_patterns,
                   exclude_dirs=resolved.exclude_dirs + extra)


class StorageSource:
    artifact_stem = "storage.tar"

    def __init__(self, config: Config, settings: TypeSettings, docker: Docker) -> None:
        self.config = config
        self.settings = settings
        self.docker = docker
        self.files = storage_files(config, settings)
        datadir = DATADIRS.get(config.tracker.driver)
        self.datadir = config.general.storage / datadir if datadir else None
        self.mysql = MysqlServer(config, docker) if datadir else None

    def _require_storage(self) -> None:
        storage = self.config.general.storage
        if storage in self.files.missing:
            raise EnvironmentProblem("the storage tree does not exist", op="archive storage",
                                     path=str(storage),
                                     hint="set general.compose_dir (or general.storage_dir) "
                                          "to the deployment's directories")

    def plan(self) -> Plan:
        """Sizes and databases from one walk; the estimate adds the largest database once
        (its snapshot waits in the backup directory while it is archived)."""
        self._require_storage()
        total, databases = 0, []
        for entry in self.files.walk():
            if stat.S_ISREG(entry.st.st_mode):
                total += entry.st.st_size + 512
                if is_database(entry):
                    databases.append((str(entry.path), entry.st.st_size))
        largest = max((size for _, size in databases), default=0)
        return Plan(
            items=tuple(str(p) for p in self.files.roots),
            estimated_bytes=total + largest + 2 * self._mysql_bytes(),
            warnings=tuple(f"not found, not archived: {p}" for p in self.files.missing),
            details={"databases": [path for path, _ in databases],
                     "missing": [str(p) for p in self.files.missing]},
        )

    def _mysql_bytes(self) -> int:
        """The MySQL data's size: its dump waits in scratch, then goes into the archive."""
        if self.mysql is None:
            return 0
        return sum(size for _, _, size in self.mysql.tables(self.mysql.database()))

    def write(self, backup: PartialBackup, plan: Plan) -> SourceResult:
        self._require_storage()
        for path in self.files.missing:
            log.warning("not found, not archived: %s", path,
                        extra=fields(Event.PATH_MISSING, type=backup.type, path=path))
        substitutes = DatabaseSubstitutes(self.docker, self.config.general.run_dir,
                                          sqlite_policy(self.config), backup.scratch)
        notes: list[str] = []
        setid: list[str] = []
        name = self.artifact_stem + SUFFIX[self.settings.compression]
        with backup.artifact(name, self.settings.compression, self.settings.compression_level,
                             plan.estimated_bytes) as out:
            tar = TarWriter(out, pad_shrunk=True)  # a truncated log must not fail DR
            for entry in self.files.walk(notes):
                if substitutes.take(entry, tar):
                    continue
                if stat.S_ISREG(entry.st.st_mode) and entry.st.st_mode & SETID_BITS:
                    setid.append(member_name(entry.path))
                tar.add(entry)
            if self.mysql is not None and self.datadir is not None:
                substitutes.records.append(add_dump(self.mysql, self.config.general.storage,
                                                    self.datadir, tar, backup.scratch))
            tar.close()
        return SourceResult(
            details={"source": self._record(plan, tar.members, substitutes.records, setid)},
            warnings=tuple(notes) + tuple(tar.warnings) + tuple(substitutes.warnings),
        )

    def _record(self, plan: Plan, members: int, substitutions: list[dict[str, object]],
                setid: list[str]) -> dict[str, object]:
        return {
            "kind": "storage",
            "storage_dir": str(self.config.general.storage),
            "included": list(plan.items),
            "missing": plan.details.get("missing", []),
            "excluded_patterns": list(self.settings.exclude),
            "excluded_dirs": [str(p) for p in self.files.exclude_dirs],
            "members": members,
            "setuid": setid,
            "substitutions": substitutions,
        }
