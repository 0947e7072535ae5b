"""The explicit map from backup type to the source that produces it.

Its keys are exactly the types `backup_types.TYPES` marks available (a unit test checks);
a type without a source here cannot run (`runner.require_available`).
"""

from __future__ import annotations

from collections.abc import Callable

from trackerbackup.config import Config
from trackerbackup.docker import Docker
from trackerbackup.errors import UsageError
from trackerbackup.sources import Source, SourceKind
from trackerbackup.sources.archive import ArchiveKind
from trackerbackup.sources.critical import KIND as CRITICAL_KIND
from trackerbackup.sources.critical import CriticalSqliteSource
from trackerbackup.sources.critical_mysql import KIND as CRITICAL_MYSQL_KIND
from trackerbackup.sources.critical_mysql import CriticalMysqlKind, CriticalMysqlSource
from trackerbackup.sources.critical_restore import CriticalKind
from trackerbackup.sources.database import SqliteSnapshotKind, database_source
from trackerbackup.sources.files import FilesSource
from trackerbackup.sources.mysql_kind import MysqlDumpKind
from trackerbackup.sources.storage import StorageSource
from trackerbackup.sources.storage_mysql import StorageKind


def _selective(config: Config, backup_type: str, docker: Docker) -> Source:
    return FilesSource(config, config.type(backup_type))


def _storage(config: Config, backup_type: str, docker: Docker) -> Source:
    return StorageSource(config, config.type(backup_type), docker)


def _critical(config: Config, backup_type: str, docker: Docker) -> Source:
    if config.tracker.driver == "mysql":
        return CriticalMysqlSource(config, config.type(backup_type), docker)
    return CriticalSqliteSource(config, config.type(backup_type), docker)


SOURCES: dict[str, Callable[[Config, str, Docker], Source]] = {
    "storage": _storage,
    "selective": _selective,
    "database": database_source,
    "critical": _critical,
}


def source_kind(kind: str, config: Config, docker: Docker) -> SourceKind:
    """The read side for a manifest's `source.kind`."""
    if kind == "sqlite":
        return SqliteSnapshotKind(config, docker)
    if kind == "files":
        return ArchiveKind(config, docker)
    if kind == "storage":
        return StorageKind(config, docker)
    if kind == CRITICAL_KIND:
        return CriticalKind(config, docker)
    if kind == "mysql":
        return MysqlDumpKind(config, docker)
    if kind == CRITICAL_MYSQL_KIND:
        return CriticalMysqlKind(config, docker)
    raise UsageError(f"backups of source kind {kind!r} cannot be verified or restored by "
                     "this version", op="read backup",
                     hint="upgrade trackerbackup, or restore by hand (docs/format.md)")
