"""freeze.recover trusts nothing it finds in the run directory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import cast

import pytest

from trackerbackup import freeze
from trackerbackup.docker import Docker
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
