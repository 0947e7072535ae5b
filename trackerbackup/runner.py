"""One backup run, start to finish: lock, clean-up, plan, preflight, write, commit, prune.

A failure anywhere is logged as a failure (journal, textfile, ping) and re-raised; the
partial directory is removed by the repository, and nothing is recorded as a success.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from trackerbackup import lock, monitoring, offsite, offsite_sync, preflight, retention
from trackerbackup.config import Config
from trackerbackup.docker import Docker
from trackerbackup.errors import TrackerBackupError, UsageError
from trackerbackup.log import Event, fields, get_logger
from trackerbackup.repository import Backup, Ignored, Repository
from trackerbackup.safefs import disk_problem
from trackerbackup.sources import Plan, Source
from trackerbackup.sources.registry import SOURCES

log = get_logger()

SourceFactory = Callable[[Config, str, Docker], Source]


@dataclass(frozen=True)
class RunOutcome:
    backup: Backup | None  # None for a dry run
    plan: Plan
    pruned: tuple[str, ...] = ()


def require_available(backup_type: str) -> SourceFactory:
    """The source of `backup_type`; a usage error (exit 2) if this version has none."""
    if backup_type not in SOURCES:
        raise UsageError(f"the {backup_type} backup type is not available in this version",
                         hint=f"set [{backup_type}] enabled = false in the configuration and "
                         f"disable its timer: systemctl disable --now "
                         f"trackerbackup@{backup_type}.timer (available: {', '.join(SOURCES)})")
    return SOURCES[backup_type]


def make_source(config: Config, backup_type: str, docker: Docker) -> Source:
    return require_available(backup_type)(config, backup_type, docker)


def run(config: Config, backup_type: str, *, dry_run: bool = False, wait: bool = False,
        docker: Docker | None = None) -> RunOutcome:
    preflight.refuse_unsafe_config(config)
    if _pushes(config, backup_type):
        offsite.refuse_unsafe_files(config)
    docker = docker or Docker(config.general.docker)
    repository = Repository(config.general.backup_dir)
    with lock.hold(config.general.run_dir, backup_type, wait=wait):
        source = make_source(config, backup_type, docker)
        if dry_run:
            return RunOutcome(backup=None, plan=source.plan())
        return _run_locked(config, backup_type, repository, source)


def _run_locked(config: Config, backup_type: str, repository: Repository,
                source: Source) -> RunOutcome:
    started = time.monotonic()
    monitoring_conf = config.monitoring
    log.info("%s backup started", backup_type, extra=fields(Event.RUN_STARTED, type=backup_type))
    ping(monitoring_conf.ping_start, None)
    try:
        _clean_up(repository, backup_type)
        plan = source.plan()
        preflight.check_free_space(config.general.backup_dir, plan.estimated_bytes,
                                   config.general.min_free_bytes)
        with repository.begin(backup_type) as partial:
            result = source.write(partial, plan)
            details = {**result.details, "warnings": list(result.warnings)}
            backup = partial.commit(details)
    except OSError as error:  # a disk or path problem no layer below named: still exit 3
        problem = disk_problem(error, f"run the {backup_type} backup",
                               backup_dir=config.general.backup_dir)
        _record_failure(config, backup_type, problem, time.monotonic() - started)
        raise problem from error
    except BaseException as error:
        _record_failure(config, backup_type, error, time.monotonic() - started)
        raise
    duration = time.monotonic() - started
    for warning in result.warnings:
        log.warning("%s", warning, extra=fields(type=backup_type, id=backup.id))
    log.info("%s backup %s succeeded: %d bytes in %.1f s", backup_type, backup.id, backup.size,
             duration, extra=fields(Event.RUN_SUCCEEDED, type=backup_type, id=backup.id,
                                    size=backup.size, duration=f"{duration:.3f}",
                                    path=backup.path))
    _write_metrics(config, backup_type, success=True, duration=duration, size=backup.size)
    ping(monitoring_conf.ping_success, None)
    pruned = prune(config, backup_type, repository, dry_run=False, protect=backup.id)
    if _pushes(config, backup_type):
        _push(config, backup_type)
    return RunOutcome(backup=backup, plan=plan, pruned=tuple(d.backup.id for d in pruned
                                                             if not d.keep))


def _pushes(config: Config, backup_type: str) -> bool:
    return config.offsite.pushes(backup_type, config.type(backup_type).enabled)


def _push(config: Config, backup_type: str) -> None:
    """Copy what the off-site repository is missing (this backup, and any an outage left
    behind). A failure leaves the local backups as they are and fails the run (exit 1)."""
    try:
        offsite_sync.sync(config, backup_type)
    except TrackerBackupError as error:
        ping(config.monitoring.ping_failure, f"off-site copy failed: {error}")
        raise


def _clean_up(repository: Repository, backup_type: str) -> None:
    """Remove what interrupted runs left; name what is in the way but not ours to delete."""
    for leftover in repository.remove_leftovers(backup_type):
        log.warning("removed %s left by an interrupted run", leftover,
                    extra=fields(Event.PARTIAL_REMOVED, type=backup_type, path=leftover))
    log_ignored(repository.scan(backup_type)[1], backup_type)


def log_ignored(ignored: list[Ignored], backup_type: str) -> None:
    for entry in ignored:
        log.warning("%s is not a backup, left alone: %s", entry.path, entry.reason,
                    extra=fields(type=backup_type, path=entry.path))


def _record_failure(config: Config, backup_type: str, error: BaseException,
                    duration: float) -> None:
    message = str(error) if isinstance(error, TrackerBackupError) else repr(error)
    if isinstance(error, TrackerBackupError):
        error.logged = True
    log.error("%s backup failed: %s", backup_type, message,
              extra=fields(Event.RUN_FAILED, type=backup_type, duration=f"{duration:.3f}",
                           error=type(error).__name__))
    _write_metrics(config, backup_type, success=False, duration=duration, size=None)
    ping(config.monitoring.ping_failure, message)


def _write_metrics(config: Config, backup_type: str, *, success: bool, duration: float,
                   size: int | None) -> None:
    directory = config.monitoring.textfile_dir
    if directory is None:
        return
    try:
        monitoring.write_textfile(directory, backup_type, success=success,
                                  finished=datetime.now(UTC), duration_s=duration,
                                  size_bytes=size)
    except OSError as error:
        log.warning("cannot write the metrics textfile in %s: %s", directory, error,
                    extra=fields(type=backup_type))


def ping(url: str, body: str | None) -> None:
    if url:
        monitoring.ping(url, body)


def prune(config: Config, backup_type: str, repository: Repository | None = None, *,
          dry_run: bool, protect: str | None = None) -> list[retention.Decision]:
    """Apply the type's retention, never deleting `protect` (the backup a run just made).
    Caller holds the lock (run) or takes it (cli prune)."""
    repository = repository or Repository(config.general.backup_dir)
    backups = {b.id: b for b in repository.backups(backup_type)}
    refs = [retention.BackupRef(id=b.id, started=b.started, verified=b.verified)
            for b in backups.values()]
    decisions = retention.decide(refs, datetime.now(UTC), config.type(backup_type).retention,
                                 protect=frozenset({protect} if protect else ()))
    if dry_run:
        return decisions
    for decision in decisions:
        if not decision.keep:
            repository.delete(backups[decision.backup.id])
            log.info("pruned %s backup %s (%s)", backup_type, decision.backup.id,
                     ", ".join(decision.reasons),
                     extra=fields(Event.PRUNED, type=backup_type, id=decision.backup.id))
    return decisions
