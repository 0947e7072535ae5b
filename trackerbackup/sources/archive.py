"""The read side of tar archives (`source.kind = "files"`, the selective type; the storage
type's archive reuses it): verify every member, restore into a directory or in place.

Extraction is `trackerbackup/extract.py` (safe against hostile archives, faithful to
owners, modes, links and mtimes). Restoring in place writes into the deployment's
compose_dir (members outside it are skipped) with the tracker stopped; into `--target DIR`
it touches no container and nothing live.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

from trackerbackup.config import Config
from trackerbackup.docker import Docker
from trackerbackup.errors import BackupFailed, UsageError
from trackerbackup.extract import ExtractReport, extract
from trackerbackup.freeze import DockerFreezer
from trackerbackup.sources import RestoreRequest, Step, StoredBackup

OP = "restore archive"


class ArchiveKind:
    def __init__(self, config: Config, docker: Docker) -> None:
        self.config = config
        self.docker = docker

    def verify(self, backup: StoredBackup, scratch: Path) -> list[str]:
        path, artifact = backup.only_artifact()
        report = extract(path, artifact.compression, scratch / "target", dry_run=True,
                         allowed_setuid=_setuid(backup))
        if report.raw_sha256 != artifact.raw_sha256:
            raise BackupFailed("the archive's content differs from the manifest", op=OP,
                               path=str(path))
        members = report.files + report.dirs + report.links
        recorded = backup.manifest.source.get("members")
        if isinstance(recorded, int) and recorded != members:
            raise BackupFailed(f"the archive holds {members} members, the manifest says "
                               f"{recorded}", op=OP, path=str(path))
        return [f"{members} archive members read, every one restorable "
                f"({report.files} files, {report.bytes:,} bytes)"]

    def restore_steps(self, backup: StoredBackup, request: RestoreRequest) -> list[Step]:
        if request.target is None and not request.in_place:
            raise UsageError("an archive is restored into --target DIR, or over the live "
                             "tree with --in-place", op=OP,
                             hint="try --target /root/restored first, then copy what you need")
        path, artifact = backup.only_artifact()
        if request.target is not None:
            target, prefix = request.target, ""
        else:
            compose_dir = self.config.general.compose_dir
            target, prefix = Path(os.path.realpath(compose_dir)), str(compose_dir)
        planned = extract(path, artifact.compression, target, only=request.only,
                          allowed_setuid=_setuid(backup), dry_run=True, strip_prefix=prefix)
        _refuse_unmatched(planned)
        steps = self._stop_tracker_steps() if request.in_place else []

        def run(stack: ExitStack) -> None:
            done = extract(path, artifact.compression, target, only=request.only,
                           allowed_setuid=_setuid(backup), strip_prefix=prefix)
            if done.raw_sha256 != artifact.raw_sha256:
                raise BackupFailed("the archive's content differs from the manifest", op=OP,
                                   path=str(path))

        steps.append(Step(
            f"extract {planned.files} files, {planned.dirs} directories and {planned.links} "
            f"links ({planned.bytes:,} bytes) into {target}"
            + (f", replacing {planned.replaced} existing entries" if planned.replaced else ""),
            run, consent=request.in_place or planned.replaced > 0))
        if request.dry_run:
            steps += [Step(f"  {action}", _nothing) for action in planned.actions]
        return steps

    def _stop_tracker_steps(self) -> list[Step]:
        general, tracker = self.config.general, self.config.tracker
        container = self.docker.find(general.compose_project, tracker.service, tracker.container)
        if container.state != "running":
            return [Step(f"leave container {container.name} {container.state}", _nothing)]
        return [Step(f"stop container {container.name}; it is started again at the end, also "
                     "if the restore fails", lambda stack: stack.enter_context(
                         DockerFreezer(self.docker, container, general.run_dir,
                                       "stop").frozen()), consent=True)]


def _nothing(stack: ExitStack) -> None:
    return None


def _setuid(backup: StoredBackup) -> frozenset[str]:
    listed = backup.manifest.source.get("setuid", [])
    return frozenset(str(p) for p in listed) if isinstance(listed, list) else frozenset()


def _refuse_unmatched(report: ExtractReport) -> None:
    if report.unmatched:
        raise UsageError(f"--only matched nothing in the archive: {', '.join(report.unmatched)}",
                         op=OP, hint="paths are host paths, e.g. /opt/torrust/storage/tracker/etc")
