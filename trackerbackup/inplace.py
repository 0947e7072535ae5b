"""Putting a database file back into a live deployment, with a way back.

The steps of an in-place restore (trackerbackup/restore.py prints, confirms and runs them):
decompress the snapshot next to the live file (same filesystem, so the swap is one
rename), stop the container that writes it, keep the live file and its -wal/-shm/-journal
aside in a safety copy, remove those companions, rename the snapshot into place with the
live file's owner and mode, start the container again (only if it was running) and
confirm it runs.

The companions go before the swap: an old -wal next to the new file would be replayed
into it. Until the restore has finished, the safety copy holds a marker
(`RESTORE-IN-PROGRESS`); `check` and the next `restore` name every such marker with what
to do. A killed restore never leaves the tracker stopped: the stop is a
`freeze.DockerFreezer` (thawed in a `finally`, and by `trackerbackup recover` after
SIGKILL).
"""

from __future__ import annotations

import os
import shutil
import socket
import time
import tomllib
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import tomli_w

from trackerbackup.atomic import fsync_dir, fsync_file, write_atomically
from trackerbackup.docker import Container, Docker
from trackerbackup.errors import EnvironmentProblem
from trackerbackup.freeze import DockerFreezer
from trackerbackup.log import Event, fields, get_logger
from trackerbackup.sources import Step, StoredBackup
from trackerbackup.stream import expand_artifact

log = get_logger()

SAFETY_DIR = "safety"
IN_PROGRESS = "RESTORE-IN-PROGRESS"
DONE = "restore.toml"
COMPANIONS = ("-wal", "-shm", "-journal")
RUNNING_TIMEOUT_S = 30.0
STAYS_RUNNING_S = 2.0


@dataclass(frozen=True)
class Ownership:
    uid: int
    gid: int
    mode: int

    @classmethod
    def of_live_file(cls, live: Path) -> Ownership:
        """The live file's, or (after a disaster: no file yet) its directory's, 0640."""
        if live.exists():
            info = live.stat()
            return cls(info.st_uid, info.st_gid, info.st_mode & 0o7777)
        parent = live.parent.stat()
        return cls(parent.st_uid, parent.st_gid, 0o640)


def in_place_steps(backup: StoredBackup, live: Path, container: Container | None,
                   docker: Docker, backup_dir: Path, run_dir: Path, *,
                   safety_copy: bool = True) -> list[Step]:
    if not live.parent.is_dir():
        raise EnvironmentProblem("the live database's directory does not exist",
                                 op="restore database", path=str(live.parent),
                                 hint="start the stack once so its storage exists, or "
                                      "restore with --target DIR")
    owner = Ownership.of_live_file(live)
    staged = live.parent / f".{live.name}.restore-{backup.id}"
    swap = [
        Step(f"remove {live.name}-wal, -shm and -journal next to {live}",
             lambda stack: _remove_companions(live), consent=True),
        Step(f"replace {live} with the snapshot (uid {owner.uid}, gid {owner.gid}, "
             f"mode {owner.mode:04o})", lambda stack: _swap(staged, live), consent=True),
    ]
    return [_stage(backup, staged, owner),
            *with_tracker_stopped(backup, live, container, docker, backup_dir, run_dir, swap,
                                  safety_copy=safety_copy)]


@dataclass(frozen=True)
class SafetyCopy:
    """How a restore keeps what is live before changing it: `what` (for the step's text),
    `keep(directory)` writes it into the safety directory, `put_back` tells an operator
    how to bring it back by hand after an interrupted restore."""

    what: str
    keep: Callable[[Path], None]
    put_back: str


def file_copy(live: Path) -> SafetyCopy:
    """The live database file and its -wal/-shm/-journal, copied as they are."""
    return SafetyCopy(f"the current {live.name} and its -wal/-shm/-journal",
                      lambda safety: _copy_files(live, safety),
                      f"stop the tracker, copy the files (except {IN_PROGRESS}) next to "
                      f"{live} keeping owners, start the tracker")


def with_tracker_stopped(backup: StoredBackup, live: Path | str, container: Container | None,
                         docker: Docker, backup_dir: Path, run_dir: Path,
                         changes: list[Step], *, copy: SafetyCopy | None = None,
                         safety_copy: bool = True) -> list[Step]:
    """`changes` to the live database, with its container stopped (if it runs) and started
    again after, and what is live kept in a safety copy first (`copy`; by default the
    database file `live`). Without `safety_copy` (--no-safety-copy) the safety directory
    holds only the marker of the restore, so an interrupted one is still named."""
    copy = copy or file_copy(Path(live))
    safety = backup_dir / SAFETY_DIR / f"{backup.manifest.type}-{_stamp()}"
    steps = []
    if container is not None and container.state == "running":
        steps.append(Step(
            f"stop container {container.name}; it is started again at the end, also if the "
            "restore fails", lambda stack: stack.enter_context(
                DockerFreezer(docker, container, run_dir, "stop").frozen()), consent=True))
    elif container is not None:
        steps.append(Step(f"leave container {container.name} {container.state}",
                          lambda stack: None))
    if safety_copy:
        steps.append(Step(f"keep {copy.what} in {safety}",
                          lambda stack: keep_aside(live, safety, backup, copy)))
    else:
        steps.append(Step(f"keep no copy of {live} (--no-safety-copy); mark the restore in "
                          f"{safety}", lambda stack: _mark(live, safety, backup, ""),
                          consent=True))
    steps += changes
    if container is not None and container.state == "running":
        steps.append(Step(f"start container {container.name} and confirm it runs",
                          lambda stack: _restart_and_confirm(stack, docker, container)))
    steps.append(Step(f"mark the restore finished in {safety}",
                      lambda stack: _finish(safety)))
    return steps


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def _stage(backup: StoredBackup, staged: Path, owner: Ownership) -> Step:
    artifact_path, artifact = backup.only_artifact()

    def run(stack: ExitStack) -> None:
        stack.callback(staged.unlink, missing_ok=True)  # gone already once swapped in
        staged.unlink(missing_ok=True)
        expand_artifact(artifact_path, artifact.compression, artifact.raw_size,
                        artifact.raw_sha256, staged)
        os.chown(staged, owner.uid, owner.gid)
        os.chmod(staged, owner.mode)

    return Step(f"decompress backup {backup.id} to {staged}", run)


def keep_aside(live: Path | str, safety: Path, backup: StoredBackup,
               copy: SafetyCopy | None = None) -> None:
    copy = copy or file_copy(Path(live))
    _mark(live, safety, backup, copy.put_back)
    copy.keep(safety)
    fsync_dir(safety)
    log.info("the database that was live is kept in %s", safety,
             extra=fields(Event.RESTORE_SAFETY_COPY, path=safety))


def _mark(live: Path | str, safety: Path, backup: StoredBackup, put_back: str) -> None:
    safety.mkdir(mode=0o700, parents=True)
    write_atomically(safety / IN_PROGRESS, tomli_w.dumps({
        "live": str(live), "backup_type": backup.manifest.type, "backup_id": backup.id,
        "started": datetime.now(UTC).isoformat(), "pid": os.getpid(),
        "host": socket.gethostname(), "put_back": put_back,
    }).encode())


def _copy_files(live: Path, safety: Path) -> None:
    for path in (live, *(Path(f"{live}{suffix}") for suffix in COMPANIONS)):
        if path.exists():
            shutil.copy2(path, safety / path.name)
            fsync_file(safety / path.name)


def _remove_companions(live: Path) -> None:
    for suffix in COMPANIONS:
        Path(f"{live}{suffix}").unlink(missing_ok=True)
    fsync_dir(live.parent)


def _swap(staged: Path, live: Path) -> None:
    os.rename(staged, live)
    fsync_dir(live.parent)


def _restart_and_confirm(stack: ExitStack, docker: Docker, container: Container) -> None:
    stack.close()  # leaves the stop window: the container starts again
    deadline = time.monotonic() + RUNNING_TIMEOUT_S
    while docker.container(container.id).state != "running":
        if time.monotonic() > deadline:
            raise _not_running(docker, container)
        time.sleep(0.2)
    time.sleep(STAYS_RUNNING_S)
    if docker.container(container.id).state != "running":
        raise _not_running(docker, container)


def _not_running(docker: Docker, container: Container) -> EnvironmentProblem:
    state = docker.container(container.id).state
    return EnvironmentProblem(
        f"container {container.name} is {state} after the restore, not running",
        op="restore database", hint=f"see 'docker logs {container.name}'; the database that "
                                    "was live before is in the safety copy named above")


def _finish(safety: Path) -> None:
    marker = safety / IN_PROGRESS
    record = marker.read_text()
    write_atomically(safety / DONE, (record + f'finished = "{datetime.now(UTC).isoformat()}"\n')
                     .encode())
    marker.unlink()
    fsync_dir(safety)


def interrupted_restores(backup_dir: Path) -> list[str]:
    """What each interrupted restore left, and what to do about it."""
    messages = []
    for marker in sorted((backup_dir / SAFETY_DIR).glob(f"*/{IN_PROGRESS}")):
        safety = marker.parent
        try:
            record = tomllib.loads(marker.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            record = {}
        live = str(record.get("live", "the live database"))
        put_back = str(record.get("put_back", file_copy(Path(live)).put_back))
        if put_back:
            messages.append(
                f"a restore into {live} was interrupted; the database that was live before "
                f"it is in {safety}. Either run the restore again, or put the old one back: "
                f"{put_back} (from {safety}), then remove {marker}")
        else:
            messages.append(
                f"a restore into {live} was interrupted and kept no copy of it "
                f"(--no-safety-copy): run the restore again, then remove {marker}")
    return messages
