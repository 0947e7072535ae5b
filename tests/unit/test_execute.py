"""Every exit status is checked; failures carry stderr's tail with secrets masked."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from trackerbackup import execute
from trackerbackup.errors import EnvironmentProblem


def test_success_returns_output() -> None:
    result = execute.run([sys.executable, "-c", "print('ok')"])
    assert result.stdout == b"ok\n"


def test_failure_raises_with_masked_stderr_tail() -> None:
    script = "import sys; sys.stderr.write('x' * 10000 + ' password=hunter2 end'); sys.exit(3)"
    with pytest.raises(execute.CommandFailed) as caught:
        execute.run([sys.executable, "-c", script], op="dump", secrets=["hunter2"])
    error = caught.value
    assert error.returncode == 3
    assert "hunter2" not in str(error)
    assert "password=********" in str(error)
    assert str(error).startswith("dump: ")
    assert len(error.stderr_tail) <= execute.STDERR_TAIL_BYTES


def test_timeout_is_a_failure() -> None:
    with pytest.raises(execute.CommandFailed, match="timed out"):
        execute.run([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.2)


def test_a_program_that_cannot_start_is_an_environment_problem(tmp_path: Path) -> None:
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    for program in (str(tmp_path / "absent"), str(script)):
        with pytest.raises(EnvironmentProblem, match="cannot start") as caught:
            execute.run((program, "--version"), op="run the hook")
        assert caught.value.exit_code == 3
        assert caught.value.op == "run the hook"
