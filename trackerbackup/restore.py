"""`trackerbackup restore`: one backup back, by the steps its source kind lists.

The backup is verified first (refused if it fails, unless --force). The steps are printed
in order; with --dry-run nothing else happens. A step that stops a container or
overwrites live data needs consent: --yes, or a yes typed on a terminal (without a
terminal, --yes is required). Steps run inside one ExitStack, so a container stopped by
a step is started again when the restore ends, whatever happens (and by `recover` after
SIGKILL). The type's lock is held throughout, so no backup run or prune of that type
interleaves with the restore.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from trackerbackup import lock
from trackerbackup.config import Config
from trackerbackup.docker import Docker
from trackerbackup.errors import BackupFailed, TrackerBackupError, UsageError
from trackerbackup.inplace import interrupted_restores
from trackerbackup.log import Event, fields, get_logger
from trackerbackup.repository import Repository
from trackerbackup.sources import RestoreRequest, SourceKind, Step, StoredBackup
from trackerbackup.sources.registry import source_kind
from trackerbackup.verify import verify_backup

log = get_logger()


@dataclass(frozen=True)
class RestoreOptions:
    backup_type: str
    backup_id: str | None  # None: the newest backup not known to be bad
    target: Path | None = None
    target_text: str | None = None  # --target as given (MySQL: a database name)
    in_place: bool = False
    only: tuple[str, ...] = ()
    critical_mode: str | None = None  # "merge" or "replace": critical snapshots only
    dry_run: bool = False
    yes: bool = False
    force: bool = False
    safety_copy: bool = True


# The kinds whose restore in place keeps a safety copy of the live database first.
SAFETY_COPY_KINDS = ("sqlite", "critical", "mysql")


Ask = Callable[[str], bool]
Say = Callable[[str], None]


Fetch = Callable[[Config, RestoreOptions], AbstractContextManager[StoredBackup]]


@contextmanager
def local_backup(config: Config, options: RestoreOptions) -> Iterator[StoredBackup]:
    yield pick_backup(config.general.backup_dir, options.backup_type, options.backup_id)


def restore(config: Config, docker: Docker, options: RestoreOptions, *, ask: Ask | None,
            say: Say, fetch: Fetch = local_backup) -> list[Step]:
    """Returns the steps (all run, or with --dry-run none). `fetch`: where the backup comes
    from (the local repository; or an off-site copy, checked, in a scratch directory)."""
    for message in interrupted_restores(config.general.backup_dir):
        log.warning("%s", message, extra=fields(Event.RESTORE_FAILED))
    with lock.hold(config.general.run_dir, options.backup_type, wait=False), \
            fetch(config, options) as backup:
        kind = source_kind(backup.manifest.kind, config, docker)
        if options.critical_mode and not backup.manifest.kind.startswith("critical"):
            raise UsageError(f"--{options.critical_mode} is for critical snapshots; backup "
                             f"{backup.id} is of source kind {backup.manifest.kind!r}",
                             op="restore", hint=f"leave out --{options.critical_mode}")
        if not options.safety_copy and (options.target is not None
                                        or backup.manifest.kind not in SAFETY_COPY_KINDS):
            raise UsageError("--no-safety-copy is for a database restored in place; this "
                             "restore keeps no safety copy anyway", op="restore",
                             hint="leave out --no-safety-copy")
        request = RestoreRequest(target=options.target, target_text=options.target_text,
                                 in_place=options.in_place, only=options.only,
                                 dry_run=options.dry_run,
                                 critical_mode=options.critical_mode,
                                 safety_copy=options.safety_copy)
        steps = kind.restore_steps(backup, request)
        if not options.force:
            steps.insert(0, _verify_first(backup, kind))
        if options.dry_run:
            return steps
        _get_consent(steps, options, ask)
        _run(backup, steps, say)
    return steps


def pick_backup(backup_dir: Path, backup_type: str, backup_id: str | None) -> StoredBackup:
    repository = Repository(backup_dir)
    candidates = repository.backups(backup_type)
    if backup_id is not None:
        chosen = [b for b in candidates if b.id == backup_id]
        if not chosen:
            raise UsageError(f"no {backup_type} backup with id {backup_id}",
                             op="restore", path=str(repository.type_dir(backup_type)),
                             hint=f"'trackerbackup list {backup_type}' shows the ids")
        return StoredBackup(chosen[0].path, chosen[0].manifest)
    for candidate in candidates:  # newest first; not verified includes a failed verify
        if candidate.verified:
            return StoredBackup(candidate.path, candidate.manifest)
    raise UsageError(f"no verified {backup_type} backup to restore", op="restore",
                     path=str(repository.type_dir(backup_type)),
                     hint=f"'trackerbackup list {backup_type}' shows what there is")


def _verify_first(backup: StoredBackup, kind: SourceKind) -> Step:
    def run(stack: ExitStack) -> None:
        outcome = verify_backup(backup, kind)
        if not outcome.record.ok:
            raise BackupFailed(
                f"backup {backup.id} failed verification: {outcome.record.problem}",
                op="restore", path=str(backup.path),
                hint="restore another backup (--id), or --force to restore this one anyway")

    return Step(f"verify backup {backup.id} (hashes, decompression, content)", run)


def _get_consent(steps: list[Step], options: RestoreOptions, ask: Ask | None) -> None:
    needing = [step.description for step in steps if step.consent]
    if not needing or options.yes:
        return
    summary = "; ".join(needing)
    if ask is None:
        raise UsageError(f"this restore would: {summary}", op="restore",
                         hint="there is no terminal to ask: pass --yes to go ahead "
                              "(--dry-run lists every step)")
    if not ask(f"This restore will: {summary}. Go ahead?"):
        raise UsageError("restore cancelled: nothing was changed", op="restore")


def _run(backup: StoredBackup, steps: list[Step], say: Say) -> None:
    manifest = backup.manifest
    log.info("restoring %s backup %s", manifest.type, manifest.id,
             extra=fields(Event.RESTORE_STARTED, type=manifest.type, id=manifest.id))
    try:
        with ExitStack() as stack:
            for number, step in enumerate(steps, 1):
                say(f"[{number}/{len(steps)}] {step.description}")
                step.run(stack)
    except TrackerBackupError as error:
        log.error("restore of %s backup %s failed: %s", manifest.type, manifest.id,
                  error.message, extra=fields(Event.RESTORE_FAILED, type=manifest.type,
                                              id=manifest.id))
        error.logged = True
        raise
    log.info("restored %s backup %s", manifest.type, manifest.id,
             extra=fields(Event.RESTORE_FINISHED, type=manifest.type, id=manifest.id))
