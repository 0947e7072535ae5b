"""The writer's record as the host reads it: its status file and its op log (writer.py).

Shared by the test bed's stack (the writer in the tracker stand-in container) and the
local writer of the tiers without Docker (tests/kit/local_tracker.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.kit.wait import wait_until
from tests.testbed import TestbedError
from tests.testbed.writer import read_status


class WriterRecord:
    """`status_path` and `oplog` as writer.py's --status and --oplog."""

    def __init__(self, status_path: Path, oplog: Path) -> None:
        self.status_path = status_path
        self.oplog = oplog

    def status(self) -> dict[str, Any]:
        """committed, failed, last_seq, max_stall_ms, p99_stall_ms, stall_hist, errors,
        running, starts, crashed; zero commits before the writer's first status."""
        return read_status(self.status_path) or {"committed": 0, "failed": 0,
                                                 "running": False, "errors": []}

    def wait_for_commits(self, count: int, timeout: float, *,
                         alive: Callable[[], bool] = lambda: True,
                         diagnose: Callable[[], str] = lambda: "") -> dict[str, Any]:
        """Wait until the status counts `count` commits; return that status.

        Raises TestbedError, with `diagnose()` appended, once the writer crashed, is no
        longer `alive()`, or `timeout` seconds have passed.
        """

        def reached() -> dict[str, Any] | None:
            status = self.status()
            if status.get("committed", 0) >= count:
                return status
            if status.get("crashed") or not alive():
                raise TestbedError(f"the writer stopped after {status.get('committed', 0)} "
                                   f"< {count} commits: {status}\n{diagnose()}")
            return None

        try:
            return wait_until(reached, timeout)
        except TimeoutError:
            status = self.status()
            raise TestbedError(f"the writer committed {status.get('committed', 0)} < {count} "
                               f"ops in {timeout:.0f} s: {status}\n{diagnose()}") from None

    def final_status(self, *, diagnose: Callable[[], str] = lambda: "") -> dict[str, Any]:
        """The status a stopped writer left; TestbedError (with `diagnose()`) if it crashed
        or did not write its final status."""
        status = read_status(self.status_path)
        if status is None or status.get("crashed") or status.get("running", True):
            what = ("wrote no status" if status is None
                    else f"crashed ({status['crashed']})" if status.get("crashed")
                    else "did not write its final status")
            raise TestbedError(f"the writer {what}: {status}\n{diagnose()}")
        return status
