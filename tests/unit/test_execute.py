"""Every exit status is checked; failures carry stderr's tail with secrets masked."""

from __future__ import annotations

import sys
import time
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


SAYS_THEN_HANGS = ("import sys, time; sys.stderr.write('retrying: refused, key=k3y\\n'); "
                   "sys.stderr.flush(); time.sleep(5)")


def test_a_timed_out_command_keeps_what_it_said_masked() -> None:
    """restic retries a refused write for a long time: why is in its stderr."""
    for call in (lambda: execute.run([sys.executable, "-c", SAYS_THEN_HANGS], timeout=1,
                                     secrets=["k3y"]),
                 lambda: execute.drain([sys.executable, "-c", SAYS_THEN_HANGS], print,
                                       op="dump", timeout=1, secrets=["k3y"])):
        with pytest.raises(execute.CommandFailed) as caught:
            call()
        assert "retrying: refused, key=********" in caught.value.stderr_tail
        assert caught.value.stderr_tail.endswith("timed out after 1 s")
        assert "k3y" not in str(caught.value)


def test_a_program_that_cannot_start_is_an_environment_problem(tmp_path: Path) -> None:
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    for program in (str(tmp_path / "absent"), str(script)):
        with pytest.raises(EnvironmentProblem, match="cannot start") as caught:
            execute.run((program, "--version"), op="run the hook")
        assert caught.value.exit_code == 3
        assert caught.value.op == "run the hook"


def test_feed_streams_stdin_and_returns_stdout() -> None:
    import io
    source = io.BytesIO(b"x" * (3 * execute.CHUNK + 5))
    script = "import sys; print(len(sys.stdin.buffer.read()))"
    result = execute.feed([sys.executable, "-c", script], source, op="count")
    assert result.stdout == f"{3 * execute.CHUNK + 5}\n".encode()


def test_feed_reports_an_early_exit_with_its_stderr() -> None:
    import io
    script = "import sys; sys.stderr.write('Fatal: wrong password'); sys.exit(1)"
    with pytest.raises(execute.CommandFailed, match="wrong password") as caught:
        execute.feed([sys.executable, "-c", script], io.BytesIO(b"y" * execute.CHUNK * 4),
                     op="push")
    assert caught.value.returncode == 1


def test_drain_hands_stdout_over_in_chunks_and_times_out() -> None:
    chunks: list[bytes] = []
    script = "import sys; sys.stdout.buffer.write(b'z' * 3000000)"
    execute.drain([sys.executable, "-c", script], chunks.append, op="dump")
    assert sum(map(len, chunks)) == 3000000
    assert max(map(len, chunks)) <= execute.CHUNK
    with pytest.raises(execute.CommandFailed, match="timed out"):
        execute.drain([sys.executable, "-c", "import time; time.sleep(5)"], chunks.append,
                      op="dump", timeout=0.3)
def test_stream_hands_stdout_over_in_chunks_and_checks_the_exit_status() -> None:
    chunks: list[bytes] = []
    script = "import sys; sys.stdout.write('x' * 3_000_000); sys.stderr.write('warning: w')"
    result = execute.stream([sys.executable, "-c", script], stdout_to=chunks.append)
    assert b"".join(chunks) == b"x" * 3_000_000
    assert result.stdout_bytes == 3_000_000
    assert result.stderr_tail == "warning: w"


def test_stream_failure_masks_secrets_in_the_stderr_tail() -> None:
    script = "import sys; print('partial'); sys.stderr.write('pw=hunter2'); sys.exit(2)"
    with pytest.raises(execute.CommandFailed) as caught:
        execute.stream([sys.executable, "-c", script], stdout_to=lambda chunk: None,
                       op="dump", secrets=["hunter2"])
    assert caught.value.returncode == 2
    assert "hunter2" not in str(caught.value)


def test_stream_kills_the_child_when_the_sink_fails(tmp_path: Path) -> None:
    marker = tmp_path / "still-running"
    script = (f"import sys, time\nsys.stdout.write('x' * 100000); sys.stdout.flush()\n"
              f"time.sleep(5); open({str(marker)!r}, 'w')")

    def full(chunk: bytes) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        execute.stream([sys.executable, "-c", script], stdout_to=full)
    assert not marker.exists()


def test_stream_feeds_stdin_from_a_file(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.write_bytes(b"y" * 2_500_000)
    out: list[bytes] = []
    script = "import sys; sys.stdout.write(str(len(sys.stdin.buffer.read())))"
    with open(source, "rb") as handle:
        execute.stream([sys.executable, "-c", script], stdin_from=handle,
                       stdout_to=out.append)
    assert b"".join(out) == b"2500000"


class Frozen(Exception):
    pass


def test_stream_asks_whether_a_quiet_child_is_stuck_and_kills_it_on_a_reason() -> None:
    asked: list[float] = []

    def stuck() -> BaseException | None:
        asked.append(time.monotonic())
        return Frozen("container tracker is paused") if len(asked) >= 2 else None

    # Output first, then silence for ever: as `docker exec` into a paused container.
    script = "import sys, time; print('row', flush=True); time.sleep(60)"
    started = time.monotonic()
    with pytest.raises(Frozen, match="paused"):
        execute.stream([sys.executable, "-c", script], stdout_to=lambda chunk: None,
                       stuck=stuck, stuck_every=0.2)
    assert len(asked) == 2
    assert time.monotonic() - started < 10


def test_stream_does_not_ask_while_stdout_flows() -> None:
    asked: list[bool] = []

    def stuck() -> BaseException | None:
        asked.append(True)
        return Frozen("asked although output flowed")

    script = ("import sys, time\n"
              "for _ in range(30):\n    print('row', flush=True); time.sleep(0.1)\n")
    result = execute.stream([sys.executable, "-c", script], stdout_to=lambda chunk: None,
                            stuck=stuck, stuck_every=2.0)
    assert result.stdout_bytes == 120
    assert asked == []
