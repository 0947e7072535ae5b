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
from trackerbackup.repository import PartialBackup, Repository
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
        """The size estimate for the disk preflight, without walking the tree when an
        earlier storage backup of the same tree tells it (`_previous_bytes`): the tree is
        walked once per run, by `write`. The first run walks it here too (`_walked`)."""
        self._require_storage()
        previous = self._previous_bytes()
        estimate, details = previous if previous is not None else self._walked()
        return Plan(
            items=tuple(str(p) for p in self.files.roots),
            estimated_bytes=estimate + 2 * self._mysql_bytes(),
            warnings=tuple(f"not found, not archived: {p}" for p in self.files.missing),
            details={**details, "missing": [str(p) for p in self.files.missing]},
        )

    def _previous_bytes(self) -> tuple[int, dict[str, object]] | None:
        """The newest backup's uncompressed archive size plus its largest database (its
        snapshot waits in the backup directory while it is archived). The archive is
        written compressed, so the uncompressed size leaves room for the tree's growth."""
        storage = str(self.config.general.storage)
        for backup in Repository(self.config.general.backup_dir).backups("storage"):
            source = backup.manifest.source
            if source.get("storage_dir") != storage:
                return None
            snapshots = [int(s.get("size_bytes", 0)) for s in source.get("substitutions", [])
                         if isinstance(s, dict) and isinstance(s.get("size_bytes", 0), int)]
            raw = sum(a.raw_size for a in backup.manifest.artifacts)
            return raw + max(snapshots, default=0), {"estimated_from": backup.id}
        return None

    def _walked(self) -> tuple[int, dict[str, object]]:
        """Sizes and databases from a walk of the tree; the estimate adds the largest
        database once."""
        total, databases = 0, []
        for entry in self.files.walk():
            if stat.S_ISREG(entry.st.st_mode):
                total += entry.st.st_size + 512
                if is_database(entry):
                    databases.append((entry.path, entry.st.st_size))
        largest = max((size for _, size in databases), default=0)
        return total + largest, {"databases": [path for path, _ in databases]}

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
                dumped = add_dump(self.mysql, self.config.general.storage, self.datadir, tar,
                                  backup.scratch)
                substitutes.records.append(dumped)
                notes.extend(dumped["warnings"])  # the dump tool's stderr, as the mysql type
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
