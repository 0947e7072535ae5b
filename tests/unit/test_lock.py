"""The type lock between real processes: each holder is a separate Python interpreter."""

from __future__ import annotations

import os
import select
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from trackerbackup.errors import EnvironmentProblem, ExitCode, LockBusy
from trackerbackup.lock import hold, lock_path

REPO = Path(__file__).resolve().parents[2]

# Takes the lock, says "locked <pid>", holds it until its stdin closes, says "released".
HOLDER = """
import sys
from pathlib import Path
from trackerbackup.lock import hold

with hold(Path(sys.argv[1]), sys.argv[2], wait=sys.argv[3] == "wait"):
    print("locked", flush=True)
    sys.stdin.read()
print("released", flush=True)
"""

TIMEOUT = 10.0


class Holder:
    def __init__(self, run_dir: Path, backup_type: str, *, wait: bool = False) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(run_dir), backup_type, "wait" if wait else ""],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            bufsize=0,
        )
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def line(self, timeout: float = TIMEOUT) -> str | None:
        """The next line it prints, or None if none comes within `timeout` seconds."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                return None
            chunk = os.read(self.proc.stdout.fileno(), 1024)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(TIMEOUT)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def start_holder() -> Iterator[Callable[..., Holder]]:
    started: list[Holder] = []

    def start(run_dir: Path, backup_type: str, *, wait: bool = False) -> Holder:
        holder = Holder(run_dir, backup_type, wait=wait)
        started.append(holder)
        return holder

    yield start
    for holder in started:
        holder.stop()


def test_second_run_is_refused_naming_the_holder(
    tmp_path: Path, start_holder: Callable[..., Holder]
) -> None:
    first = start_holder(tmp_path, "database")
    assert first.line() == "locked"

    with pytest.raises(LockBusy) as caught, hold(tmp_path, "database"):
        pytest.fail("took a lock another process holds")

    error = caught.value
    assert error.exit_code == ExitCode.LOCKED
    assert f"another database backup is running (PID {first.pid})" in str(error)
    assert "--wait" in str(error)
    assert error.path == str(tmp_path / "database.lock")


def test_lock_is_free_after_the_holder_is_killed(
    tmp_path: Path, start_holder: Callable[..., Holder]
) -> None:
    first = start_holder(tmp_path, "storage")
    assert first.line() == "locked"
    os.kill(first.pid, signal.SIGKILL)
    first.proc.wait(TIMEOUT)

    with hold(tmp_path, "storage"):
        assert (tmp_path / "storage.lock").read_text() == f"{os.getpid()}\n"


def test_wait_blocks_until_the_holder_releases(
    tmp_path: Path, start_holder: Callable[..., Holder]
) -> None:
    first = start_holder(tmp_path, "selective")
    assert first.line() == "locked"
    second = start_holder(tmp_path, "selective", wait=True)

    assert second.line(timeout=1.0) is None  # still waiting
    first.release()

    assert first.line() == "released"
    assert second.line() == "locked"
    assert (tmp_path / "selective.lock").read_text() == f"{second.pid}\n"


def test_different_types_do_not_block_each_other(
    tmp_path: Path, start_holder: Callable[..., Holder]
) -> None:
    first = start_holder(tmp_path, "database")
    assert first.line() == "locked"

    with hold(tmp_path, "storage"), hold(tmp_path, "selective"):
        assert (tmp_path / "storage.lock").read_text() == f"{os.getpid()}\n"
        assert (tmp_path / "database.lock").read_text() == f"{first.pid}\n"


def test_creates_private_run_dir_and_keeps_the_lock_file(tmp_path: Path) -> None:
    run_dir = tmp_path / "run" / "trackerbackup"

    with hold(run_dir, "database"):
        pass

    lock = run_dir / "database.lock"
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    assert lock.exists()  # never deleted: a waiter may have it open
    assert lock.read_text() == ""  # no PID left behind once released


def test_lock_is_free_again_after_the_block(tmp_path: Path) -> None:
    with hold(tmp_path, "database"):
        pass
    with hold(tmp_path, "database"):
        pass


def test_released_when_the_block_raises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), hold(tmp_path, "database"):
        raise RuntimeError("backup failed")
    with hold(tmp_path, "database"):
        pass


@pytest.mark.parametrize("name", ["", ".hidden", "../escape", "a/b"])
def test_refuses_type_names_that_are_not_file_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="not a backup type name"):
        lock_path(tmp_path, name)


def test_refuses_a_run_dir_that_is_a_symlink(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (tmp_path / "run").symlink_to(elsewhere)

    with pytest.raises(EnvironmentProblem, match=r"general\.run_dir is a symbolic link"), \
            hold(tmp_path / "run", "database"):
        pass
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize(("change", "expected"), [
    (lambda p: os.chown(p, 65534, 65534), "owned by uid 65534"),
    (lambda p: os.chmod(p, 0o777), "writable by other users"),
])
def test_refuses_a_run_dir_others_could_plant_locks_in(
        tmp_path: Path, change: Callable[[Path], None], expected: str) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    change(run_dir)

    with pytest.raises(EnvironmentProblem, match=expected) as refused, hold(run_dir, "database"):
        pass
    assert refused.value.exit_code == ExitCode.ENVIRONMENT
    assert "general.run_dir" in str(refused.value)
    assert str(run_dir) in (refused.value.hint or "")
    assert not (run_dir / "database.lock").exists()


def test_tightens_a_run_dir_others_may_only_read(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o755)
    os.chmod(run_dir, 0o755)

    with hold(run_dir, "database"):
        pass
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
