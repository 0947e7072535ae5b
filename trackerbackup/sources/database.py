"""The database type: the tracker's database, by its driver.

SQLite: the file is found through the tracker container's bind mount (`docker inspect`)
or taken from `sqlite.host_path`; the snapshot itself is `trackerbackup/sqlite/`, which
freezes the tracker through `freeze.DockerFreezer` when the copy would stall its writers
for longer than the budget.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

from trackerbackup import sqlite
from trackerbackup.atomic import fsync_dir
from trackerbackup.config import Config, TypeSettings
from trackerbackup.docker import Container, Docker
from trackerbackup.errors import BackupFailed, EnvironmentProblem, TrackerBackupError, UsageError
from trackerbackup.freeze import DockerFreezer, freezer_factory
from trackerbackup.inplace import in_place_steps
from trackerbackup.log import Event, fields, get_logger
from trackerbackup.repository import PartialBackup
from trackerbackup.sources import (
    Plan,
    RestoreRequest,
    Source,
    SourceResult,
    Step,
    StoredBackup,
)
from trackerbackup.sources.mysql import MysqlDumpSource
from trackerbackup.stream import SUFFIX, copy_into, expand_artifact

log = get_logger()


def database_source(config: Config, backup_type: str, docker: Docker) -> Source:
    if config.tracker.driver == "sqlite":
        return TrackerSqliteSource(config, config.type(backup_type), docker)
    if config.tracker.driver == "mysql":
        return MysqlDumpSource(config, backup_type, docker)
    raise UsageError(f"tracker.driver = {config.tracker.driver!r} is not supported",
                     hint="set tracker.driver = \"sqlite\" or \"mysql\"")


def sqlite_policy(config: Config) -> sqlite.SqlitePolicy:
    """The snapshot policy of every SQLite database trackerbackup copies ([sqlite])."""
    return sqlite.SqlitePolicy(
        max_writer_stall=config.sqlite.max_writer_stall,
        over_budget=config.sqlite.over_budget,  # type: ignore[arg-type]
        integrity_check=config.sqlite.integrity_check,  # type: ignore[arg-type]
    )


class TrackerSqliteSource:
    def __init__(self, config: Config, settings: TypeSettings, docker: Docker) -> None:
        self.config = config
        self.settings = settings
        self.docker = docker
        self.policy = sqlite_policy(config)
        self._located: tuple[Path, Container | None] | None = None

    def locate(self) -> tuple[Path, Container | None]:
        """The database file on the host, and the tracker container (None if absent and
        not needed because `sqlite.host_path` was given)."""
        if self._located is None:
            self._located = self._locate()
        return self._located

    def _locate(self) -> tuple[Path, Container | None]:
        general, tracker = self.config.general, self.config.tracker
        if self.config.sqlite.host_path is not None:
            try:
                container = self.docker.find(general.compose_project, tracker.service,
                                             tracker.container)
            except TrackerBackupError:
                container = None
            return self.config.sqlite.host_path, container
        container = self.docker.find(general.compose_project, tracker.service,
                                     tracker.container)
        return self.docker.host_path(container, self.config.sqlite.path_in_container), container

    def plan(self) -> Plan:
        path, container = self.locate()
        info = sqlite.inspect(path, self.policy)
        warnings = (info.advice,) if info.advice else ()
        return Plan(
            items=(str(path),),
            # the raw snapshot and its compressed copy exist side by side for a moment
            estimated_bytes=2 * info.size_bytes,
            warnings=warnings,
            details={
                "container": container.name if container else "",
                "journal_mode": info.journal_mode,
                "size_bytes": info.size_bytes,
                "estimated_stall_seconds": round(info.estimated_stall_seconds, 3),
                "max_writer_stall": self.policy.max_writer_stall,
            },
        )

    def freezer(self, container: Container | None) -> sqlite.FreezerFactory | None:
        return freezer_factory(self.docker, [container] if container else [],
                               self.config.general.run_dir)

    def write(self, backup: PartialBackup, plan: Plan) -> SourceResult:
        path, container = self.locate()
        scratch = backup.scratch(path.name)
        report = sqlite.snapshot(path, scratch, self.policy, self.freezer(container))
        stall = max(report.lock_held_seconds, report.freeze_seconds)
        log.info("snapshot of %s (%s mode, %s): tracker writes waited at most %.0f ms", path,
                 report.journal_mode, report.strategy, stall * 1000,
                 extra=fields(Event.SNAPSHOT_TAKEN, type=backup.type, id=backup.id, path=path,
                              strategy=report.strategy, journal_mode=report.journal_mode,
                              stall_ms=round(stall * 1000),
                              frozen_ms=round(report.freeze_seconds * 1000),
                              size=report.size_bytes))
        store_snapshot(backup, self.settings, scratch, path.name)
        return SourceResult(
            details={"source": {"kind": "sqlite", "path": str(path),
                                "container": container.name if container else "",
                                **report.to_manifest()}},
            warnings=plan.warnings,
        )


def store_snapshot(backup: PartialBackup, settings: TypeSettings, scratch: Path,
                   name: str) -> None:
    """The scratch file as the backup's one artifact, compressed; the scratch file goes."""
    name += SUFFIX[settings.compression]
    try:
        with backup.artifact(name, settings.compression, settings.compression_level,
                             scratch.stat().st_size) as out, open(scratch, "rb") as raw:
            copy_into(raw, out)
    except OSError as error:
        raise EnvironmentProblem(f"cannot store the snapshot: {error.strerror}",
                                 op="store snapshot", path=str(backup.path)) from error
    finally:
        scratch.unlink(missing_ok=True)


def enable_wal(config: Config, docker: Docker) -> Path:
    """Switch the tracker's SQLite database to WAL, with the tracker stopped meanwhile."""
    source = TrackerSqliteSource(config, config.type("database"), docker)
    path, container = source.locate()
    if container is None:
        raise EnvironmentProblem(
            "the tracker container was not found, so it cannot be stopped for the switch",
            op="enable WAL", path=str(path),
            hint="set tracker.container / general.compose_project to find it",
        )
    sqlite.enable_wal(path, DockerFreezer(docker, container, config.general.run_dir, "stop"))
    return path


# ------------------------------------------------------------------ the read side


class SqliteSnapshotKind:
    """Verify and restore a `source.kind = "sqlite"` backup: one SQLite snapshot."""

    def __init__(self, config: Config, docker: Docker) -> None:
        self.config = config
        self.docker = docker

    def verify(self, backup: StoredBackup, scratch: Path) -> list[str]:
        return verify_sqlite_artifact(backup, scratch)

    def restore_steps(self, backup: StoredBackup, request: RestoreRequest) -> list[Step]:
        if request.only:
            raise UsageError("--only selects paths of an archive; a database is restored whole",
                             op="restore database")
        if request.target is not None:
            return steps_to_target(backup, request.target)
        source = TrackerSqliteSource(self.config, self.config.type("database"), self.docker)
        live, container = source.locate()
        return in_place_steps(backup, live, container, self.docker,
                              self.config.general.backup_dir, self.config.general.run_dir,
                              safety_copy=request.safety_copy)


def verify_sqlite_artifact(backup: StoredBackup, scratch: Path) -> list[str]:
    """The one artifact is an SQLite database: integrity_check, row counts as recorded."""
    artifact_path, artifact = backup.only_artifact()
    expanded = scratch / "snapshot.db"
    expand_artifact(artifact_path, artifact.compression, artifact.raw_size,
                    artifact.raw_sha256, expanded)
    try:
        checked = sqlite.verify_snapshot(expanded, "full")
    finally:
        expanded.unlink(missing_ok=True)
    recorded = backup.manifest.source.get("table_rows")
    if recorded != checked.table_rows:
        raise BackupFailed(
            f"row counts {checked.table_rows} differ from the manifest's {recorded}",
            op="verify sqlite snapshot", path=str(artifact_path))
    return ["PRAGMA integrity_check (full): ok",
            f"row counts of {len(checked.table_rows)} tables match the manifest"]


def steps_to_target(backup: StoredBackup, target: Path) -> list[Step]:
    """Write the snapshot into `target` as a database file: touches nothing live."""
    artifact_path, artifact = backup.only_artifact()
    name = Path(backup.manifest.source.get("path", "tracker.db")).name
    dest = target / name

    def expand(stack: ExitStack) -> None:
        target.mkdir(mode=0o700, parents=True, exist_ok=True)
        if dest.exists():
            raise UsageError(f"{dest} exists already", op="restore database",
                             hint="choose an empty --target directory")
        staged = target / f".{name}.restoring"
        staged.unlink(missing_ok=True)
        expand_artifact(artifact_path, artifact.compression, artifact.raw_size,
                        artifact.raw_sha256, staged)
        os.rename(staged, dest)
        fsync_dir(target)

    return [Step(f"write the snapshot of backup {backup.id} to {dest}", expand)]
