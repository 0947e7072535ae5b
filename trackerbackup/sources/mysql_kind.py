"""The read side of `source.kind = "mysql"`: verify and restore a dump, on the live server.

Verify loads the dump into a scratch database on the same server (`docker exec -i`),
compares its tables and row counts with the manifest, and drops it again. Restore loads
the dump into the original database with the tracker stopped meanwhile, after a safety
dump of it kept under <backup_dir>/safety/ (unless --no-safety-copy): the same steps,
marker and restart as an SQLite restore in place (`inplace.with_tracker_stopped`). With
--target NAME it loads into a new database of that name instead.
"""

from __future__ import annotations

import secrets
from contextlib import ExitStack
from pathlib import Path

from trackerbackup.config import Config, _database_name
from trackerbackup.docker import Container, Docker
from trackerbackup.errors import BackupFailed, TrackerBackupError, UsageError
from trackerbackup.inplace import SafetyCopy, with_tracker_stopped
from trackerbackup.log import get_logger
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
        return self._steps_in_place(backup, request.safety_copy)

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

    def _steps_in_place(self, backup: StoredBackup, safety_copy: bool) -> list[Step]:
        database = self.server.database()
        live = f"database {database} on {self.server.container().name}"
        load = Step(f"load backup {backup.id} into {live} (its tables are replaced)",
                    lambda stack: self._load(backup, database), consent=True)
        general = self.config.general
        return with_tracker_stopped(backup, live, self._tracker(), self.docker,
                                    general.backup_dir, general.run_dir, [load],
                                    copy=self._safety_dump(database, live),
                                    safety_copy=safety_copy)

    def _tracker(self) -> Container | None:
        general, tracker = self.config.general, self.config.tracker
        try:
            return self.docker.find(general.compose_project, tracker.service, tracker.container)
        except TrackerBackupError:
            return None

    def _safety_dump(self, database: str, live: str) -> SafetyCopy:
        name = f"{database}.sql{SUFFIX['zstd']}"

        def keep(safety: Path) -> None:
            with ArtifactWriter(safety / name, "zstd", 3) as out:
                dump_checked(self.server, database, out)

        server = self.server.server()
        return SafetyCopy(f"a dump of the current {live}", keep,
                          f"load {name} into {live}: zstd -dc {name} | docker exec -i "
                          f"{server.container.name} sh -c 'export MYSQL_PWD="
                          f"\"$MYSQL_ROOT_PASSWORD\"; exec {server.client_tool} -uroot "
                          f"{database}'")
