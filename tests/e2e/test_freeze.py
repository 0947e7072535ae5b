"""Freezing the real tracker container: whatever happens inside, its state comes back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.testbed.engine import container_state, docker
from tests.testbed.stack import Stack
from trackerbackup.docker import Docker
from trackerbackup.freeze import DockerFreezer, recover

pytestmark = pytest.mark.testbed


def freezer(stack: Stack, name: str) -> DockerFreezer:
    engine = Docker("/usr/bin/docker")
    return DockerFreezer(engine, engine.container(stack.tracker_container), stack.run_dir, name)


def markers(stack: Stack) -> list[Path]:
    return sorted((stack.run_dir / "frozen").glob("*.json"))


@pytest.mark.parametrize("action", ["pause", "stop"])
def test_a_failing_copy_still_thaws_the_tracker(sqlite_stack: Stack, action: str) -> None:
    frozen_state = {"pause": "paused", "stop": "exited"}[action]
    with pytest.raises(RuntimeError, match="copy failed"), freezer(sqlite_stack, action).frozen():
        assert container_state(sqlite_stack.tracker_container) == frozen_state
        assert len(markers(sqlite_stack)) == 1
        raise RuntimeError("copy failed")
    assert container_state(sqlite_stack.tracker_container) == "running"
    assert markers(sqlite_stack) == []
    before = sqlite_stack.writer_status()["committed"]
    sqlite_stack.wait_for_commits(before + 20)
    assert sqlite_stack.stop_writer()["failed"] == 0


def test_a_container_paused_by_someone_else_is_left_as_it_was(sqlite_stack: Stack) -> None:
    docker("pause", sqlite_stack.tracker_container)
    try:
        with freezer(sqlite_stack, "pause").frozen():
            assert markers(sqlite_stack) == []
        assert container_state(sqlite_stack.tracker_container) == "paused"
    finally:
        docker("unpause", sqlite_stack.tracker_container)


def test_recover_thaws_what_a_dead_run_left_and_spares_a_live_one(sqlite_stack: Stack) -> None:
    engine = Docker("/usr/bin/docker")
    container = engine.container(sqlite_stack.tracker_container)
    directory = sqlite_stack.run_dir / "frozen"
    directory.mkdir(parents=True, exist_ok=True)
    record = {"id": container.id, "name": container.name, "action": "pause",
              "previous_state": "running", "pid": os.getppid()}  # alive: pytest's parent
    marker = directory / f"{container.id}.json"
    marker.write_text(json.dumps(record))
    docker("pause", sqlite_stack.tracker_container)
    assert recover(engine, sqlite_stack.run_dir) == []  # its run is still going
    assert container_state(sqlite_stack.tracker_container) == "paused"

    marker.write_text(json.dumps({**record, "pid": 2**22 + 12345}))  # no such process
    assert recover(engine, sqlite_stack.run_dir) == [container.name]
    assert container_state(sqlite_stack.tracker_container) == "running"
    assert not marker.exists()
