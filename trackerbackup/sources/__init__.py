"""What gets snapshotted, and how it comes back. Each source kind is two-sided.

Write side (`Source`): a `Plan` (what it would back up, an estimate of the bytes it needs,
warnings) without writing anything; `run --dry-run` and `check` stop there. Then `write`
puts its artifacts into a partial backup and returns what the manifest should record,
including `source.kind`.

Read side (`SourceKind`, dispatched on the manifest's `source.kind`): `verify` checks a
stored backup beyond its hashes, `restore_steps` lists the actions of a restore, which
`trackerbackup/restore.py` prints (--dry-run), asks consent for, and runs.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from trackerbackup.errors import BackupFailed
from trackerbackup.manifest import ArtifactRecord, Manifest
from trackerbackup.repository import PartialBackup


@dataclass(frozen=True)
class Plan:
    items: tuple[str, ...]
    estimated_bytes: int
    warnings: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceResult:
    """What the manifest records about the source, and any warnings for the log."""

    details: dict[str, Any]
    warnings: tuple[str, ...] = ()


class Source(Protocol):
    def plan(self) -> Plan: ...

    def write(self, backup: PartialBackup, plan: Plan) -> SourceResult: ...


# ------------------------------------------------------------------ the read side


@dataclass(frozen=True)
class StoredBackup:
    """A committed backup as a source kind reads it: its directory and its manifest."""

    path: Path
    manifest: Manifest

    @property
    def id(self) -> str:
        return self.manifest.id

    def only_artifact(self) -> tuple[Path, ArtifactRecord]:
        if len(self.manifest.artifacts) != 1:
            raise BackupFailed(f"expected one artifact, the manifest lists "
                               f"{len(self.manifest.artifacts)}", op="read backup",
                               path=str(self.path))
        artifact = self.manifest.artifacts[0]
        return self.path / artifact.name, artifact


@dataclass(frozen=True)
class RestoreRequest:
    """Where a restore goes: `target` (a directory; touches no container), or in place
    (the default for a database, explicit --in-place for an archive); `only`: these
    archive members (and what is under them); `critical_mode`: how a critical snapshot
    goes into the live database (--merge or --replace)."""

    target: Path | None
    in_place: bool = False
    only: tuple[str, ...] = ()
    dry_run: bool = False  # the steps are only printed: a kind may list finer ones
    critical_mode: str | None = None  # critical snapshots: "merge" or "replace"
    target_text: str | None = None  # --target as given: a MySQL backup names a database
    safety_copy: bool = True  # in place: keep what is live first (--no-safety-copy: no)


@dataclass(frozen=True)
class Step:
    """One action of a restore, in order. `run` may enter a context (a stopped container)
    into the stack, which the restore leaves last, also on failure. `consent`: the step
    stops a container or overwrites live data, so it needs --yes or a yes on a terminal."""

    description: str
    run: Callable[[ExitStack], None]
    consent: bool = False


class SourceKind(Protocol):
    """The read side of one manifest `source.kind`: verify and restore what `write` made."""

    def verify(self, backup: StoredBackup, scratch: Path) -> list[str]:
        """Checks beyond the artifacts' hashes; returns what was checked, raises
        BackupFailed on a mismatch. `scratch` is a private directory for temporary files."""
        ...

    def restore_steps(self, backup: StoredBackup, request: RestoreRequest) -> list[Step]: ...
