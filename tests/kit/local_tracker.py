"""The tracker on this machine, for the tiers without Docker (integration tests, bench/).

The database and the writer are the test bed's (tests/testbed/tree.py, writer.py); here
the writer runs as a child process, so it can be frozen with signals, and its record is
checked with tests/testbed/prefix.py like the test bed's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.kit.wait import wait_until
from tests.testbed.record import WriterRecord

WRITER_SCRIPT = Path(__file__).resolve().parents[1] / "testbed" / "writer.py"
STOP_TIMEOUT_S = 30.0


class LocalWriter:
    """tests/testbed/writer.py committing to `db` every `interval_ms`, from a child process.

    Its status file and op log go to `workdir`. The op log is appended to, so a writer
    started again on the same database continues one record; the status (the counts)
    starts afresh. `uid`: run as that user (the tests run as root); `workdir` becomes
    theirs, because the writer rewrites its status file there.
    """

    def __init__(self, db: Path, workdir: Path, *, interval_ms: float = 5.0,
                 uid: int | None = None, wal_autocheckpoint: int | None = None,
                 seed: int = 1) -> None:
        workdir.mkdir(exist_ok=True)
        self.record = WriterRecord(workdir / "testbed-status.json",
                                   workdir / "testbed-oplog.tsv")
        self.record.status_path.unlink(missing_ok=True)
        argv = [sys.executable, str(WRITER_SCRIPT), "--db", str(db),
                "--oplog", str(self.record.oplog), "--status", str(self.record.status_path),
                "--interval-ms", str(interval_ms), "--seed", str(seed)]
        if uid is not None:
            os.chown(workdir, uid, uid)
            argv += ["--uid", str(uid)]
        if wal_autocheckpoint is not None:
            argv += ["--wal-autocheckpoint", str(wal_autocheckpoint)]
        self.process = subprocess.Popen(argv)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def oplog(self) -> Path:
        return self.record.oplog

    def committed(self) -> int:
        """Commits since this writer started."""
        count: int = self.record.status().get("committed", 0)
        return count

    def wait_for_commits(self, count: int, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until this writer has committed `count` ops since it started."""
        return self.record.wait_for_commits(
            count, timeout, alive=lambda: self.process.poll() is None,
            diagnose=lambda: f"writer process {self.pid}: exit status {self.process.poll()}")

    def stop(self) -> dict[str, Any]:
        """SIGTERM (after SIGCONT, in case it is frozen); its final status."""
        os.kill(self.pid, signal.SIGCONT)
        self.process.terminate()
        self.process.wait(timeout=STOP_TIMEOUT_S)
        return self.record.final_status(
            diagnose=lambda: f"writer process {self.pid}: exit status {self.process.returncode}")

    def kill(self) -> None:
        """End it whatever its state (clean-up after a failed test)."""
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGCONT)
            self.process.kill()
            self.process.wait()


def process_state(pid: int) -> str:
    """The state letter of /proc/PID/stat: R running, S sleeping, T stopped, ..."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


def is_stopped(pid: int) -> bool:
    return process_state(pid) in ("T", "t")  # t: stopped by a tracer


class SignalFreezer:
    """A `Freezer` that really freezes a local writer: SIGSTOP, then always SIGCONT."""

    def __init__(self, pid: int, name: str = "pause") -> None:
        self.name = name
        self.pid = pid
        self.times_frozen = 0

    @contextmanager
    def frozen(self) -> Iterator[None]:
        os.kill(self.pid, signal.SIGSTOP)
        try:
            wait_until(lambda: is_stopped(self.pid), 5, interval=0.001,
                       what=f"process {self.pid} stopped")
            self.times_frozen += 1
            yield
        finally:
            os.kill(self.pid, signal.SIGCONT)
