"""The read side of `source.kind = "mysql"`: verify and restore a dump, on the live server.

Verify loads the dump into a scratch database on the same server (`docker exec -i`),
compares its tables and row counts with the manifest, and drops it again. Restore loads
the dump into the original database (after a safety dump of it, kept under
<backup_dir>/safety/, and with the tracker stopped meanwhile) or, with --target NAME, into
a new database of that name.
"""

from __future__ import annotations

import secrets
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

from trackerbackup.config import Config, _database_name
from trackerbackup.docker import Docker
from trackerbackup.errors import BackupFailed, TrackerBackupError, UsageError
from trackerbackup.freeze import DockerFreezer
from trackerbackup.inplace import SAFETY_DIR
from trackerbackup.log import Event, fields, get_logger
from trackerbackup.mysql import MysqlServer
from trackerbackup.sources import RestoreRequest, Step, StoredBackup
from trackerbackup.sources.mysql import dump_checked
from trackerbackup.stream import SUFFIX, ArtifactWriter, open_raw

log = get_logger()
SCRATCH_PREFIX = "trackerbackup_verify_"


class MysqlDumpKind:
    def __init__(self, config: Config, docker: Docker) -> None:
        self.config = config
        self.docker = docker
        self.server = MysqlServer(config, docker)

    def verify(self, backup: StoredBackup, scratch: Path) -> list[str]:
        recorded = backup.manifest.source.get("table_rows")
        name = f"{SCRATCH_PREFIX}{secrets.token_hex(4)}"
        self.server.create_database(name)
        try:
            self._load(backup, name)
            loaded = self.server.table_rows(name)
        finally:
            self.server.drop_database(name)
        if loaded != recorded:
            raise BackupFailed(f"the loaded dump has tables and rows {loaded}, the manifest "
                               f"{recorded}", op="verify MySQL dump", path=str(backup.path))
        return [f"loaded into scratch database {name} on {self.server.container().name} "
                "(dropped again)",
                f"tables and row counts of {len(loaded)} tables match the manifest"]

    def _load(self, backup: StoredBackup, database: str) -> None:
        artifact_path, artifact = backup.only_artifact()
        with open_raw(artifact_path, artifact.compression) as raw:
            self.server.load(database, raw)

    def restore_steps(self, backup: StoredBackup, request: RestoreRequest) -> list[Step]:
        if request.only:
            raise UsageError("--only selects paths of an archive; a database is restored whole",
                             op="restore database")
        if request.target is not None or request.target_text:
            return self._steps_to_new_database(backup, request.target_text or "")
        return self._steps_in_place(backup)

    def _steps_to_new_database(self, backup: StoredBackup, name: str) -> list[Step]:
        if not name or _database_name(name) or "/" in name:
            raise UsageError(f"--target {name!r} is not a database name", op="restore database",
                             hint="for a MySQL backup, --target names a new database "
                             "(letters, digits, _, $ and -)")

        def create(stack: ExitStack) -> None:
            if self.server.database_exists(name):
                raise UsageError(f"database {name} exists already", op="restore database",
                                 hint="choose a new name for --target")
            self.server.create_database(name)

        return [Step(f"create database {name} on {self.server.container().name}", create),
                Step(f"load backup {backup.id} into database {name}",
                     lambda stack: self._load(backup, name))]

    def _steps_in_place(self, backup: StoredBackup) -> list[Step]:
        database = self.server.database()
        container = self.server.container().name
        safety = (self.config.general.backup_dir / SAFETY_DIR /
                  f"{backup.manifest.type}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S.%fZ')}")
        steps = [Step(f"dump the current database {database} to {safety}",
                      lambda stack: self._safety_dump(database, safety))]
        steps += self._stop_tracker()
        steps.append(Step(f"load backup {backup.id} into database {database} on {container} "
                          "(its tables are replaced)", lambda stack: self._load(backup, database),
                          consent=True))
        return steps

    def _stop_tracker(self) -> list[Step]:
        general, tracker = self.config.general, self.config.tracker
        try:
            container = self.docker.find(general.compose_project, tracker.service,
                                         tracker.container)
        except TrackerBackupError:
            return []
        if container.state != "running":
            return []
        return [Step(f"stop container {container.name}; it is started again at the end, also "
                     "if the restore fails", lambda stack: stack.enter_context(
                         DockerFreezer(self.docker, container, general.run_dir, "stop").frozen()),
                     consent=True)]

    def _safety_dump(self, database: str, safety: Path) -> None:
        safety.mkdir(mode=0o700, parents=True)
        path = safety / f"{database}.sql{SUFFIX['zstd']}"
        with ArtifactWriter(path, "zstd", 3) as out:
            dump_checked(self.server, database, out)
        log.info("the database that was live is kept in %s", path,
                 extra=fields(Event.RESTORE_SAFETY_COPY, path=safety))

