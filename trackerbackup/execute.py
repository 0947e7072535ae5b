"""The only module that starts processes.

Callers build argv tuples and hand them over. Every exit status is checked; a failure
raises `CommandFailed` carrying the tail of stderr with every known secret masked.
Secrets never travel in argv: pass them through `env` or an inherited pipe.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import IO

from trackerbackup.errors import BackupFailed, EnvironmentProblem

STDERR_TAIL_BYTES = 4000
CHUNK = 1 << 20
MAX_CAPTURED_STDOUT = 16 << 20  # a streaming command's stdout is a report, never data
READ_TAIL_BYTES = STDERR_TAIL_BYTES + 1024
MASK = "********"


class CommandFailed(BackupFailed):
    def __init__(self, argv: Sequence[str], returncode: int, stderr_tail: str, op: str,
                 secrets: Sequence[str] = ()) -> None:
        self.argv = tuple(mask(arg, secrets) for arg in argv)
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        detail = f": {stderr_tail.strip()}" if stderr_tail.strip() else ""
        super().__init__(
            f"'{' '.join(self.argv)}' exited with status {returncode}{detail}",
            op=op or "run command",
        )


def mask(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


def _tail(data: bytes, secrets: Sequence[str]) -> str:
    # Mask before cutting, so a secret straddling the cut cannot leak in part.
    text = mask(data[-READ_TAIL_BYTES:].decode("utf-8", "replace"), secrets)
    return text[-STDERR_TAIL_BYTES:]


def run(
    argv: Sequence[str],
    *,
    op: str = "",
    secrets: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    input_bytes: bytes | None = None,
    timeout: float | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run to completion, capturing output (for short outputs only: it is held in memory)."""
    try:
        result = subprocess.run(
            list(argv),
            input=input_bytes,
            capture_output=True,
            env=dict(env) if env is not None else None,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise CommandFailed(argv, -1, f"timed out after {timeout} s", op, secrets) from error
    except OSError as error:  # not found, not executable, bad interpreter
        raise EnvironmentProblem(f"cannot start {mask(argv[0], secrets)}: "
                                 f"{error.strerror or error}", op=op or "run command",
                                 hint="check the program's path in the configuration") from error
    if check and result.returncode != 0:
        raise CommandFailed(argv, result.returncode, _tail(result.stderr, secrets), op, secrets)
    return result


def feed(argv: Sequence[str], source: IO[bytes], *, op: str, secrets: Sequence[str] = (),
         env: Mapping[str, str] | None = None,
         timeout: float | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run with `source` streamed into stdin chunk by chunk (memory stays flat); stdout (a
    short report) is returned. If the program exits early, its own error is raised."""
    with _started(argv, op, secrets, env, timeout, stdin=subprocess.PIPE) as (process, out):
        assert process.stdin is not None
        try:
            while chunk := source.read(CHUNK):
                process.stdin.write(chunk)
            process.stdin.close()
        except BrokenPipeError:
            pass  # it stopped reading: its exit status and stderr say why
        process.wait()
        out.seek(0)
        stdout = out.read(MAX_CAPTURED_STDOUT)
    return subprocess.CompletedProcess(list(argv), 0, stdout, b"")


def drain(argv: Sequence[str], sink: Callable[[bytes], object], *, op: str,
          secrets: Sequence[str] = (), env: Mapping[str, str] | None = None,
          timeout: float | None = None) -> None:
    """Run and hand its stdout to `sink` chunk by chunk (memory stays flat)."""
    with _started(argv, op, secrets, env, timeout, stdout=subprocess.PIPE) as (process, _):
        assert process.stdout is not None
        while chunk := process.stdout.read(CHUNK):
            sink(chunk)
        process.wait()


@contextmanager
def _started(argv: Sequence[str], op: str, secrets: Sequence[str],
             env: Mapping[str, str] | None, timeout: float | None, *,
             stdin: int | None = None,
             stdout: int | None = None) -> Iterator[tuple[subprocess.Popen[bytes], IO[bytes]]]:
    """A running process whose stderr (and stdout, unless piped) go to temporary files, so
    neither can fill a pipe; killed after `timeout`; its exit status checked on the way out."""
    with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as out:
        try:
            process = subprocess.Popen(list(argv), stdin=stdin, stdout=stdout or out,
                                       stderr=err, env=dict(env) if env is not None else None)
        except OSError as error:
            raise EnvironmentProblem(f"cannot start {mask(argv[0], secrets)}: "
                                     f"{error.strerror or error}", op=op or "run command",
                                     hint="check the program's path in the configuration"
                                     ) from error
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            process.kill()

        watchdog = threading.Timer(timeout or 0, expire)
        if timeout:
            watchdog.start()
        try:
            yield process, out
        finally:
            watchdog.cancel()
            if process.poll() is None:
                process.kill()
            process.wait()
            for pipe in (process.stdin, process.stdout):
                if pipe is not None and not pipe.closed:
                    pipe.close()
        if expired.is_set():
            raise CommandFailed(argv, -1, f"timed out after {timeout} s", op, secrets)
        if process.returncode != 0:
            err.seek(max(0, err.seek(0, 2) - READ_TAIL_BYTES))
            raise CommandFailed(argv, process.returncode, _tail(err.read(), secrets), op,
                                secrets)
