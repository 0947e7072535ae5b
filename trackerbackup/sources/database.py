"""The database type: the tracker's database, by its driver.

SQLite: the file is found through the tracker container's bind mount (`docker inspect`)
or taken from `sqlite.host_path`; the snapshot itself is `trackerbackup/sqlite/`, which
freezes the tracker through `freeze.DockerFreezer` when the copy would stall its writers
for longer than the budget.
"""

from __future__ import annotations

from pathlib import Path

from trackerbackup import sqlite
from trackerbackup.config import Config, TypeSettings
from trackerbackup.docker import Container, Docker
from trackerbackup.errors import EnvironmentProblem, TrackerBackupError, UsageError
from trackerbackup.freeze import DockerFreezer
from trackerbackup.log import Event, fields, get_logger
from trackerbackup.repository import PartialBackup
from trackerbackup.sources import Plan, Source, SourceResult
from trackerbackup.stream import SUFFIX, copy_into

log = get_logger()


def database_source(config: Config, backup_type: str, docker: Docker) -> Source:
    if config.tracker.driver == "sqlite":
        return TrackerSqliteSource(config, config.type(backup_type), docker)
    raise UsageError(f"tracker.driver = {config.tracker.driver!r} is not supported",
                     hint="set tracker.driver = \"sqlite\"")


class TrackerSqliteSource:
    def __init__(self, config: Config, settings: TypeSettings, docker: Docker) -> None:
        self.config = config
        self.settings = settings
        self.docker = docker
        self.policy = sqlite.SqlitePolicy(
            max_writer_stall=config.sqlite.max_writer_stall,
            over_budget=config.sqlite.over_budget,  # type: ignore[arg-type]
            integrity_check=config.sqlite.integrity_check,  # type: ignore[arg-type]
        )
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

    def _freezer(self, container: Container | None) -> sqlite.FreezerFactory | None:
        if container is None:
            return None
        docker, tracker, run_dir = self.docker, container, self.config.general.run_dir

        def factory(name: str) -> sqlite.Freezer:
            return DockerFreezer(docker, tracker, run_dir, name)

        return factory

    def write(self, backup: PartialBackup, plan: Plan) -> SourceResult:
        path, container = self.locate()
        scratch = backup.scratch(path.name)
        report = sqlite.snapshot(path, scratch, self.policy, self._freezer(container))
        stall = max(report.lock_held_seconds, report.freeze_seconds)
        log.info("snapshot of %s (%s mode, %s): tracker writes waited at most %.0f ms", path,
                 report.journal_mode, report.strategy, stall * 1000,
                 extra=fields(Event.SNAPSHOT_TAKEN, type=backup.type, id=backup.id, path=path,
                              strategy=report.strategy, journal_mode=report.journal_mode,
                              stall_ms=round(stall * 1000),
                              frozen_ms=round(report.freeze_seconds * 1000),
                              size=report.size_bytes))
        name = path.name + SUFFIX[self.settings.compression]
        try:
            with backup.artifact(name, self.settings.compression,
                                 self.settings.compression_level, report.size_bytes) as out, \
                    open(scratch, "rb") as raw:
                copy_into(raw, out)
        except OSError as error:
            raise EnvironmentProblem(f"cannot store the snapshot: {error.strerror}",
                                     op="store snapshot", path=str(backup.path)) from error
        finally:
            scratch.unlink(missing_ok=True)
        return SourceResult(
            details={"source": {"kind": "sqlite", "path": str(path),
                                "container": container.name if container else "",
                                **report.to_manifest()}},
            warnings=plan.warnings,
        )


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
