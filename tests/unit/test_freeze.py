"""freeze.recover trusts nothing it finds in the run directory."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import cast

import pytest

from trackerbackup import freeze
from trackerbackup.docker import Container, Docker
from trackerbackup.errors import EnvironmentProblem
from trackerbackup.lock import hold


class NoDocker:
    """recover must not ask the engine about anything planted."""

    def container(self, ref: str) -> None:
        raise AssertionError(f"recover looked up {ref} on the word of a planted marker")


def frozen_dir(run_dir: Path) -> Path:
    directory = run_dir / "frozen"
    directory.mkdir(mode=0o700, parents=True)
    run_dir.chmod(0o700)
    return directory


@pytest.mark.parametrize("plant", [
    lambda p: p.write_text("{not json"),
    lambda p: p.write_text(json.dumps(["a", "list"])),
    lambda p: p.write_text(json.dumps({"id": 5, "name": "tracker", "action": "pause",
                                       "previous_state": "running"})),
    lambda p: p.write_text("x" * (freeze.MARKER_LIMIT + 1)),
    lambda p: os.mkfifo(p),  # must not hang
    lambda p: p.symlink_to("/etc/hostname"),
], ids=["garbage", "a-list", "wrong-types", "too-large", "fifo", "symlink"])
def test_recover_ignores_and_keeps_a_marker_it_did_not_write(
        tmp_path: Path, plant: object, caplog: pytest.LogCaptureFixture) -> None:
    marker = frozen_dir(tmp_path / "run") / "0123abcd.json"
    plant(marker)  # type: ignore[operator]

    thawed = freeze.recover(cast(Docker, NoDocker()), tmp_path / "run")

    assert thawed == []
    assert os.path.lexists(marker)
    assert "not a freeze marker written by trackerbackup" in caplog.text


def test_recover_refuses_a_marker_directory_that_is_a_symlink(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "0123abcd.json").write_text(json.dumps(
        {"id": "0123abcd", "name": "tracker", "action": "stop", "previous_state": "running",
         "pid": None}))
    (run_dir / "frozen").symlink_to(planted)

    with pytest.raises(EnvironmentProblem, match="symbolic link"):
        freeze.recover(cast(Docker, NoDocker()), run_dir)


CONTAINER_ID = "2adb60a6a2c0c4f889b051a967bf4b2e3bdb12593ef50e14a9fb7faec82e00ee"


def test_recover_removes_the_temporary_file_of_a_marker_write_that_was_killed(
        tmp_path: Path) -> None:
    # Found by the fault suite: SIGKILL between mkstemp and rename in write_atomically.
    temporary = frozen_dir(tmp_path / "run") / f".{CONTAINER_ID}.json.wwns2zpt.tmp"
    temporary.write_text('{"id": "')

    assert freeze.recover(cast(Docker, NoDocker()), tmp_path / "run") == []

    assert not temporary.exists()


def test_recover_keeps_the_temporary_marker_of_a_run_writing_it_now(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    temporary = frozen_dir(run_dir) / f".{CONTAINER_ID}.json.abcd1234.tmp"
    temporary.write_text('{"id": "')

    with hold(run_dir, f"freeze-{CONTAINER_ID}"):  # a live run freezing that container
        freeze.recover(cast(Docker, NoDocker()), run_dir)

    assert temporary.exists()


class SignalledMidPause:
    """An engine whose pause request lands although SIGTERM reached us while the docker
    CLI was still running (the CI failure: the engine paused after our thaw had looked)."""

    def __init__(self) -> None:
        self.state = "running"
        self.calls: list[str] = []

    def container(self, ref: str) -> Container:
        return Container(id=CONTAINER_ID, name="tracker", state=self.state)

    def pause(self, container: Container) -> None:
        self.calls.append("pause")
        signal.raise_signal(signal.SIGTERM)
        self.state = "paused"

    def unpause(self, container: Container) -> None:
        self.calls.append("unpause")
        self.state = "running"


class Stopped(Exception):
    pass


def raise_stopped(signum: int, frame: object) -> None:
    raise Stopped(signal.Signals(signum).name)


def test_sigterm_during_the_pause_call_is_raised_after_it_and_the_tracker_thawed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    previous = signal.signal(signal.SIGTERM, raise_stopped)
    try:
        engine = SignalledMidPause()
        freezer = freeze.DockerFreezer(cast(Docker, engine), engine.container(CONTAINER_ID),
                                       tmp_path / "run", "pause")
        copied = []
        with pytest.raises(Stopped, match="SIGTERM"), freezer.frozen():
            copied.append(True)  # not reached: the held signal is raised before the copy
        assert signal.getsignal(signal.SIGTERM) is raise_stopped
    finally:
        signal.signal(signal.SIGTERM, previous)

    assert copied == []
    assert engine.calls == ["pause", "unpause"]
    assert engine.state == "running"
    assert list((tmp_path / "run" / "frozen").glob("*.json")) == []


class SignalledMidThaw(SignalledMidPause):
    def pause(self, container: Container) -> None:
        self.calls.append("pause")
        self.state = "paused"

    def unpause(self, container: Container) -> None:
        self.calls.append("unpause")
        signal.raise_signal(signal.SIGTERM)
        self.state = "running"


def test_sigterm_during_the_thaw_is_raised_once_the_tracker_runs(tmp_path: Path) -> None:
    previous = signal.signal(signal.SIGTERM, raise_stopped)
    try:
        engine = SignalledMidThaw()
        freezer = freeze.DockerFreezer(cast(Docker, engine), engine.container(CONTAINER_ID),
                                       tmp_path / "run", "pause")
        with pytest.raises(Stopped), freezer.frozen():
            pass
    finally:
        signal.signal(signal.SIGTERM, previous)

    assert engine.calls == ["pause", "unpause"]
    assert engine.state == "running"
    assert list((tmp_path / "run" / "frozen").glob("*.json")) == []
