"""pytest fixtures of the test bed (imported by the conftest of each tier on the test bed).

Session: `engine`, `images`. Per test: `sqlite_stack`, `mysql_stack`, `stack_factory`,
`vm` (the VM mounts the stack the test asked for: `mysql_stack` if requested, else
`sqlite_stack`). No skipping: if the engine cannot start, the tests error loudly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.testbed import TestbedError
from tests.testbed.engine import Engine, ensure_engine
from tests.testbed.images import Images, ensure_images
from tests.testbed.stack import Stack, down_project, leftover_projects
from tests.testbed.vm import VM

__all__ = ["engine", "images", "mysql_stack", "pytest_terminal_summary", "sqlite_stack",
           "stack_factory", "vm"]

_our_projects: set[str] = set()


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    """A Docker engine; stopped at the end only if this session started it."""
    eng = ensure_engine()
    yield eng
    left = sorted(set(leftover_projects()) & _our_projects)
    for project in left:
        down_project(project)
    # Stop the test bed's dockerd only when no other session and no container uses it.
    eng.stop_if_last()
    if left:
        raise TestbedError(f"test bed projects were left behind (now removed): {left}")


@pytest.fixture(scope="session")
def images(engine: Engine) -> Images:
    """The cached role images (cold: built once, ~1 min; warm: well under a second)."""
    imgs = ensure_images(log=False)
    what = (f"cold build {imgs.cold_build_seconds:.1f} s" if imgs.cold_build_seconds is not None
            else f"warm start {imgs.elapsed_seconds:.2f} s")
    _timings.append(f"[testbed] images ({what}): {imgs.base}")
    return imgs


def _stack(images: Images, **kwargs: Any) -> Stack:
    stack = Stack(images=images, **kwargs)
    _our_projects.add(stack.project)
    return stack


@pytest.fixture
def sqlite_stack(images: Images) -> Iterator[Stack]:
    """SQLite stack (2,000 torrents, DELETE journal), writer running."""
    with _stack(images, flavour="sqlite") as stack:
        yield stack


@pytest.fixture
def mysql_stack(images: Images) -> Iterator[Stack]:
    """MariaDB stack (2,000 torrents), writer running against it."""
    with _stack(images, flavour="mysql") as stack:
        yield stack


@pytest.fixture
def stack_factory(images: Images) -> Iterator[Callable[..., Stack]]:
    """`stack_factory(flavour=..., journal_mode="wal", rows=..., ...)` -> a started Stack."""
    stacks: list[Stack] = []

    def make(**kwargs: Any) -> Stack:
        stack = _stack(images, **kwargs)
        stacks.append(stack)
        return stack.__enter__()

    yield make
    for stack in reversed(stacks):
        stack.down()


@pytest.fixture
def vm(request: pytest.FixtureRequest, images: Images) -> Iterator[VM]:
    """The systemd VM container, with the test's stack root mounted at the same path."""
    name = "mysql_stack" if "mysql_stack" in request.fixturenames else "sqlite_stack"
    stack: Stack = request.getfixturevalue(name)
    with VM(stack, images=images) as machine:
        yield machine


_timings: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Show the image build/warm-start time at the end of the run."""
    for line in _timings:
        terminalreporter.write_line(line)
