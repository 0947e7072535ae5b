"""The MySQL flavour of the storage type: the datadir's consistent dump inside the archive.

With tracker.driver = "mysql" the server's datadir (`<storage>/mysql/data`) is never
archived raw (a live datadir copied from the outside is not consistent). Instead the
database's dump, taken by the MySQL source's own routine (`sources.mysql.dump_checked`:
--single-transaction, the trailer and stderr checked), is added as one member at
`<storage>/mysql/trackerbackup-dump/<database>.sql` (`dump_member`), mode 0600 root. It
waits in the backup's scratch file while it is taken (a tar header needs its size), so
the disk estimate adds the data's size once.

The read side (`load_dump`) streams that member out of the archive into the configured
MySQL container through `MysqlServer.load`, the path the database type's restore uses.
"""

from __future__ import annotations

import tarfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from trackerbackup.errors import BackupFailed
from trackerbackup.inplace import SAFETY_DIR
from trackerbackup.log import Event, fields, get_logger
from trackerbackup.mysql import MysqlServer
from trackerbackup.sources import RestoreRequest, Step, StoredBackup
from trackerbackup.sources.archive import ArchiveKind
from trackerbackup.sources.files import TarWriter
from trackerbackup.sources.mysql import dump_checked
from trackerbackup.sources.walk import member_name
from trackerbackup.stream import SUFFIX, ArtifactWriter, open_raw

log = get_logger()
DUMP_DIR = "mysql/trackerbackup-dump"  # relative to the storage tree
STRATEGY = "mysql-dump"


def dump_dir(storage: Path) -> Path:
    return storage / DUMP_DIR


def dump_member(storage: Path, database: str) -> str:
    return member_name(dump_dir(storage) / f"{database}.sql")


def add_dump(server: MysqlServer, storage: Path, replaces: Path, tar: TarWriter,
             scratch: Callable[[str], Path]) -> dict[str, Any]:
    """Dump the configured database into `tar`; the manifest's substitution record."""
    started = time.monotonic()
    found = server.server()
    database = server.database()
    staged = scratch("mysql-dump")
    try:
        with open(staged, "wb") as out:
            outcome = dump_checked(server, database, out)
        name = dump_member(storage, database)
        with open(staged, "rb") as content:
            tar.add_stream(name, 0o600, staged.stat().st_size, content)
    finally:
        staged.unlink(missing_ok=True)
    log.info("dump of MySQL database %s (%s %s) added to the archive as %s: %d tables, "
             "%d rows", database, found.flavour, found.version, name,
             len(outcome.table_rows), sum(outcome.table_rows.values()),
             extra=fields(Event.SNAPSHOT_TAKEN, type="storage", strategy=STRATEGY,
                          path=name))
    return {"path": name, "replaces": member_name(replaces), "strategy": STRATEGY,
            "containers": [found.container.name], "flavour": found.flavour,
            "version": found.version, "database": database, "dump_tool": found.dump_tool,
            "dump_options": list(found.dump_options), "table_rows": outcome.table_rows,
            "trailer": outcome.trailer, "warnings": list(outcome.warnings),
            "duration_seconds": round(time.monotonic() - started, 3)}


def dump_record(source: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest's MySQL dump substitution of a storage backup, if it has one."""
    for record in source.get("substitutions", []):
        if isinstance(record, dict) and record.get("strategy") == STRATEGY:
            return record
    return None


def load_dump(server: MysqlServer, archive: Path, compression: str, record: dict[str, Any],
              database: str) -> None:
    """Stream the dump member of `archive` into `database` on the configured server."""
    with open_raw(archive, compression) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
        for member in tar:
            if member.name == record["path"] and member.isreg():
                content: IO[bytes] | None = tar.extractfile(member)
                assert content is not None
                server.load(database, content)
                return
    raise BackupFailed(f"the archive has no member {record['path']} (the MySQL dump the "
                       "manifest lists)", op="restore storage", path=str(archive))


class StorageKind(ArchiveKind):
    """The read side of `source.kind = "storage"`: the archive (`ArchiveKind`), and with a
    MySQL dump in it, in place, the dump loaded into the configured database afterwards
    (after a safety dump of what is there, kept under <backup_dir>/safety/)."""

    def restore_steps(self, backup: StoredBackup, request: RestoreRequest) -> list[Step]:
        steps = super().restore_steps(backup, request)
        record = dump_record(backup.manifest.source)
        if record is None:
            return steps
        if not request.in_place or request.only:
            steps.append(Step(f"leave the MySQL dump {record['path']} unloaded (only a "
                              "whole restore --in-place loads it; by hand: docs/format.md)",
                              _nothing))
            return steps
        server = MysqlServer(self.config, self.docker)
        database, container = server.database(), server.container().name
        path, artifact = backup.only_artifact()
        safety = (self.config.general.backup_dir / SAFETY_DIR /
                  f"{backup.manifest.type}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S.%fZ')}")

        def load(stack: ExitStack) -> None:
            _keep_aside(server, database, safety)
            load_dump(server, path, artifact.compression, record, database)

        steps.append(Step(f"load the MySQL dump {record['path']} into database {database} on "
                          f"{container} (its tables are replaced; what is there now is "
                          f"dumped to {safety} first)", load, consent=True))
        return steps


def _keep_aside(server: MysqlServer, database: str, safety: Path) -> None:
    if not server.database_exists(database):
        server.create_database(database)  # a new VM whose server was started without it
        return
    safety.mkdir(mode=0o700, parents=True)
    kept = safety / f"{database}.sql{SUFFIX['zstd']}"
    with ArtifactWriter(kept, "zstd", 3) as out:
        dump_checked(server, database, out)
    log.info("the database that was live is kept in %s", kept,
             extra=fields(Event.RESTORE_SAFETY_COPY, path=safety))


def _nothing(stack: ExitStack) -> None:
    return None
