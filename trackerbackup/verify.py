"""`trackerbackup verify`: is a stored backup still what its manifest says, and usable?

Every artifact's stored sha256 and size, a full decompression against the raw sha256,
then the checks of its source kind (an SQLite snapshot: full integrity_check and row
counts; an archive: every member read). The outcome is written into the backup as
`verification.toml` (atomically; docs/format.md), so `list` shows it and retention never
counts a backup that failed as the newest verified one.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from trackerbackup import __version__
from trackerbackup.errors import EnvironmentProblem, TrackerBackupError, UsageError
from trackerbackup.log import Event, fields, get_logger
from trackerbackup.manifest import VerificationRecord, write_verification
from trackerbackup.sources import SourceKind, StoredBackup
from trackerbackup.stream import ArtifactInfo, verify_artifact

log = get_logger()

SCRATCH_PREFIX = ".verify-"


@dataclass(frozen=True)
class Verified:
    backup: StoredBackup
    record: VerificationRecord


def verify_backup(backup: StoredBackup, kind: SourceKind) -> Verified:
    """Runs every check and records the outcome; never raises for a failed check."""
    checks: list[str] = []
    problem = ""
    try:
        checks += _check_artifacts(backup)
        checks += _check_content(backup, kind)
    except (EnvironmentProblem, UsageError) as error:
        if checks:  # the artifacts are sound; the content check could not run (a server
            raise   # down, a scratch disk full): nothing bad is known, nothing is recorded
        problem = str(error)
    except TrackerBackupError as error:
        problem = str(error)
    record = VerificationRecord(verified_at=datetime.now(UTC), ok=not problem,
                                checks=tuple(checks), problem=problem,
                                tool_version=__version__)
    write_verification(backup.path, record)
    _log(backup, record)
    return Verified(backup, record)


def _check_artifacts(backup: StoredBackup) -> list[str]:
    checks = []
    for artifact in backup.manifest.artifacts:
        verify_artifact(backup.path / artifact.name, ArtifactInfo(
            name=artifact.name, size=artifact.size, sha256=artifact.sha256,
            raw_size=artifact.raw_size, raw_sha256=artifact.raw_sha256,
            compression=artifact.compression))
        checks.append(f"{artifact.name}: stored and decompressed sha256 match the manifest")
    return checks


def _check_content(backup: StoredBackup, kind: SourceKind) -> list[str]:
    # Scratch space beside the backups: the same disk the preflight watches, and private.
    scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=backup.path.parent.parent))
    try:
        return kind.verify(backup, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _log(backup: StoredBackup, record: VerificationRecord) -> None:
    manifest = backup.manifest
    if record.ok:
        log.info("%s backup %s verified: %s", manifest.type, manifest.id,
                 "; ".join(record.checks),
                 extra=fields(Event.BACKUP_VERIFIED, type=manifest.type, id=manifest.id,
                              path=backup.path))
    else:
        log.error("%s backup %s FAILED verification: %s", manifest.type, manifest.id,
                  record.problem,
                  extra=fields(Event.VERIFICATION_FAILED, type=manifest.type, id=manifest.id,
                               path=backup.path))
