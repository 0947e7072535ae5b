"""Freezing the tracker for a copy that must not race its writes, and always thawing it.

`docker pause` makes the tracker's writes wait (they do not fail, and peers stay in
memory); a stop window stops it. Either way the previous state is restored in a
`finally`, SIGTERM from systemd reaches that `finally` (see cli.py), and a marker file in
the run directory records what was done, so `trackerbackup recover` (the unit's
ExecStopPost) can thaw the container even if this process was killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from trackerbackup import lock
from trackerbackup.atomic import write_atomically
from trackerbackup.docker import Container, Docker
from trackerbackup.errors import LockBusy
from trackerbackup.log import Event, fields, get_logger
from trackerbackup.safefs import read_small_file

log = get_logger()


MARKER_LIMIT = 4096
MARKER_KEYS = {"id": str, "name": str, "action": str, "previous_state": str}


def _marker_dir(run_dir: Path) -> Path:
    return lock.private_run_dir(run_dir, "frozen")


def _write_marker(run_dir: Path, container: Container, action: str) -> Path:
    directory = _marker_dir(run_dir)
    marker = directory / f"{container.id}.json"
    write_atomically(marker, json.dumps({"id": container.id, "name": container.name,
                                         "action": action, "previous_state": container.state,
                                         "pid": os.getpid()}).encode())
    return marker


class DockerFreezer:
    """A `Freezer` (see sqlite/model.py) backed by docker pause or a stop window."""

    def __init__(self, docker: Docker, container: Container, run_dir: Path, name: str) -> None:
        if name not in ("pause", "stop"):
            raise ValueError(name)
        self.name = name
        self._docker = docker
        self._container = container
        self._run_dir = run_dir

    @contextmanager
    def frozen(self) -> Iterator[None]:
        # Two types may snapshot the same database at once: the second waits here, so the
        # first never thaws the tracker under the second's copy.
        with lock.hold(self._run_dir, _lock_name(self._container.id), wait=True):
            yield from self._frozen_exclusively()

    def _frozen_exclusively(self) -> Iterator[None]:
        container = self._docker.container(self._container.id)
        if container.state != "running":
            # Paused or stopped already: nothing writes, and it is not ours to change.
            yield
            return
        marker = _write_marker(self._run_dir, container, self.name)
        started = time.monotonic()
        try:
            # Held, not interrupted: a SIGTERM that killed the docker CLI after it sent
            # the request would leave the engine to pause the tracker after our thaw has
            # looked and found it running (seen in CI), and the marker removed.
            with signals_held():
                self._freeze(container)
            log.info("%s container %s for the copy", "paused" if self.name == "pause"
                     else "stopped", container.name,
                     extra=fields(Event.CONTAINER_PAUSED, container=container.name,
                                  action=self.name))
            yield
        finally:
            # A second SIGTERM must not interrupt the thaw itself (the marker would still
            # let `recover` finish it, but the tracker should not wait for that). One held
            # back is raised once the thaw is logged, so it cannot lose that record.
            with signals_held():
                self._thaw(container)
                marker.unlink(missing_ok=True)
                seconds = time.monotonic() - started
                log.info("container %s is running again after %.2f s", container.name,
                         seconds, extra=fields(Event.CONTAINER_RESUMED,
                                               container=container.name, action=self.name,
                                               duration=f"{seconds:.3f}"))

    def _freeze(self, container: Container) -> None:
        if self.name == "pause":
            self._docker.pause(container)
        else:
            self._docker.stop(container)

    def _thaw(self, container: Container) -> None:
        state = self._docker.container(container.id).state
        if state == "paused":
            self._docker.unpause(container)
        elif state in ("exited", "created"):
            self._docker.start(container)


class FreezeAll:
    """Several containers write one file: a `Freezer` that freezes them all."""

    def __init__(self, name: str, freezers: Sequence[DockerFreezer]) -> None:
        self.name = name
        self._freezers = freezers

    @contextmanager
    def frozen(self) -> Iterator[None]:
        with ExitStack() as stack:
            for freezer in self._freezers:
                stack.enter_context(freezer.frozen())
            yield


def freezer_factory(docker: Docker, containers: Sequence[Container], run_dir: Path
                    ) -> Callable[[str], DockerFreezer | FreezeAll] | None:
    """What freezes the writers of one database file (a sqlite `FreezerFactory`): the
    containers that mount it; None when no container does (nothing to freeze)."""
    if not containers:
        return None

    def factory(name: str) -> DockerFreezer | FreezeAll:
        freezers = [DockerFreezer(docker, c, run_dir, name) for c in containers]
        return freezers[0] if len(freezers) == 1 else FreezeAll(name, freezers)

    return factory


def recover(docker: Docker, run_dir: Path) -> list[str]:
    """Thaw every container a killed run left frozen; returns their names."""
    directory = _marker_dir(run_dir)
    _remove_unfinished_markers(directory, run_dir)
    thawed = []
    for marker in sorted(directory.glob("*.json")):
        record = _read_marker(marker)
        if record is None:
            continue
        if _alive(record.get("pid")):
            continue  # its run is still going and will thaw the container itself
        container = docker.container(record["id"])
        if container.state == "paused":
            docker.unpause(container)
        elif container.state in ("exited", "created") and record["previous_state"] == "running":
            docker.start(container)
        marker.unlink()
        thawed.append(container.name)
        log.warning("recovered container %s left %s by an interrupted run (pid %s)",
                    container.name, record["action"], record.get("pid"),
                    extra=fields(Event.CONTAINER_RESUMED, container=container.name,
                                 action="recover"))
    return thawed


HELD_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def signals_held() -> Iterator[None]:
    """SIGTERM and SIGINT arriving inside are raised when it ends, so a freeze or thaw the
    engine was asked for completes and is seen by the code after it. The Python handlers
    are swapped rather than the thread's signal mask set: the kernel may hand a process
    signal to any thread that does not block it (a drain thread of execute.py)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers can only be swapped in the main thread, the one they run in
        return
    arrived: list[int] = []
    previous: dict[signal.Signals, Any] = {}
    try:
        for signum in HELD_SIGNALS:  # inside the try: one arriving midway is restored too
            previous[signum] = signal.signal(
                signum, lambda number, _frame: arrived.append(number))
        yield
    finally:
        for held, handler in previous.items():
            signal.signal(held, handler)
        if arrived:
            signal.raise_signal(arrived[0])  # its own handler runs now, as if just arrived


def _lock_name(container_id: str) -> str:
    """The lock held while a container is frozen, and while its marker is written."""
    return f"freeze-{container_id}"


def _remove_unfinished_markers(directory: Path, run_dir: Path) -> None:
    """Remove the temporary file of a marker whose write was killed (the container was not
    frozen yet: the marker is written first). Only under that container's freeze lock, so
    a run writing its marker right now is never disturbed."""
    for temporary in sorted(directory.glob(".*.json.*.tmp")):
        container_id = temporary.name[1:].split(".json.", 1)[0]
        if not container_id or not os.path.isfile(temporary) or temporary.is_symlink():
            continue
        try:
            with lock.hold(run_dir, _lock_name(container_id), wait=False):
                temporary.unlink(missing_ok=True)
        except (LockBusy, ValueError, OSError):
            continue  # frozen by a live run, not a name this program writes, or gone
        log.info("removed %s, left by a run killed while it wrote it", temporary,
                 extra=fields(path=temporary))


def _read_marker(marker: Path) -> dict[str, Any] | None:
    """The marker's record, or None (logged) if it is not one this program wrote: it is
    left alone, as no container is touched on the word of a file we cannot read."""
    try:
        record = json.loads(read_small_file(marker, MARKER_LIMIT))
        if not isinstance(record, dict) or any(
                not isinstance(record.get(key), kind) for key, kind in MARKER_KEYS.items()):
            raise ValueError("not a freeze marker")
    except (OSError, ValueError) as error:  # NotARegularFile and JSON errors are ValueErrors
        log.warning("ignored %s: %s (not a freeze marker written by trackerbackup; "
                    "remove it once no container is left paused or stopped)", marker, error,
                    extra=fields(path=marker))
        return None
    return record


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
