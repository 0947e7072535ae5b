"""The only module that starts processes.

Callers build argv tuples and hand them over. Every exit status is checked; a failure
raises `CommandFailed` carrying the tail of stderr with every known secret masked.
Secrets never travel in argv: pass them through `env` or an inherited pipe.
"""

from __future__ import annotations

import contextlib
import fcntl
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
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
        said = _tail(error.stderr, secrets) if isinstance(error.stderr, bytes) else ""
        raise CommandFailed(argv, -1, f"{said}\ntimed out after {timeout} s".lstrip(), op,
                            secrets) from error
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
        err.seek(max(0, err.seek(0, 2) - READ_TAIL_BYTES))
        said = _tail(err.read(), secrets)
        if expired.is_set():  # what it said before, then why it stopped
            raise CommandFailed(argv, -1, f"{said}\ntimed out after {timeout} s".lstrip(), op,
                                secrets)
        if process.returncode != 0:
            raise CommandFailed(argv, process.returncode, said, op, secrets)


class _TailReader:
    """Drains a pipe in a thread, keeping only its last bytes (flat memory)."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._pipe = pipe
        self.data = b""
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while chunk := self._pipe.read1(CHUNK):  # type: ignore[attr-defined]
            self.data = (self.data + chunk)[-READ_TAIL_BYTES:]

    def join(self) -> bytes:
        self._thread.join()
        return self.data


class _Feeder:
    """Copies a readable stream into the child's stdin in a thread; keeps its error."""

    def __init__(self, source: IO[bytes], pipe: IO[bytes]) -> None:
        self._source = source
        self._pipe = pipe
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self._thread.start()

    def _feed(self) -> None:
        try:
            while chunk := self._source.read(CHUNK):
                self._pipe.write(chunk)
        except BrokenPipeError:
            pass  # the child stopped reading: its exit status tells why
        except BaseException as error:
            self.error = error
        finally:
            with contextlib.suppress(OSError):
                self._pipe.close()

    def join(self) -> None:
        self._thread.join()
        if self.error is not None:
            raise self.error


def _widen(pipe: IO[bytes]) -> None:
    """Let the pipe hold a whole chunk: the writer runs on while the sink works, and each
    read hands over what piled up meanwhile (fewer, larger chunks)."""
    with contextlib.suppress(OSError):  # an unprivileged limit: the default size works too
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, CHUNK)


class _QuietWatch:
    """Asks `stuck()` whether the child is stuck whenever `every` seconds pass without
    stdout; on a reason (the error to raise) it kills the child. A process that waits on
    something frozen (a paused container) would otherwise be waited on for ever."""

    def __init__(self, process: subprocess.Popen[bytes],
                 stuck: Callable[[], BaseException | None], every: float) -> None:
        self.progress = 0  # bumped by the reader: stdout chunks so far
        self.reason: BaseException | None = None
        self._process = process
        self._stuck = stuck
        self._every = every
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        seen = self.progress
        while not self._done.wait(self._every):
            if self.progress != seen:
                seen = self.progress
                continue
            reason = self._stuck()
            if reason is not None and not self._done.is_set():
                self.reason = reason
                self._process.kill()
                return

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


@dataclass(frozen=True)
class Streamed:
    """A streaming run that exited 0: its masked stderr tail (warnings) and stdout bytes."""

    stderr_tail: str
    stdout_bytes: int


def stream(
    argv: Sequence[str],
    *,
    stdout_to: Callable[[bytes], object] | None = None,
    stdin_from: IO[bytes] | None = None,
    op: str = "",
    secrets: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    stuck: Callable[[], BaseException | None] | None = None,
    stuck_every: float = 15.0,
) -> Streamed:
    """Run with stdout handed to `stdout_to` chunk by chunk (or drained into the tail)
    and stdin read from `stdin_from`, in flat memory whatever the size. The exit status is
    checked (CommandFailed with the masked stderr tail); if `stdout_to` raises, the child
    is killed, reaped, and the sink's error propagates. `stuck`: asked after each
    `stuck_every` seconds without stdout; the error it returns kills the child and is
    raised."""
    try:
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE if stdin_from is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None)
    except OSError as error:
        raise EnvironmentProblem(f"cannot start {mask(argv[0], secrets)}: "
                                 f"{error.strerror or error}", op=op or "run command",
                                 hint="check the program's path in the configuration") from error
    assert proc.stdout is not None
    assert proc.stderr is not None
    _widen(proc.stdout)
    stderr = _TailReader(proc.stderr)
    feeder = _Feeder(stdin_from, proc.stdin) if stdin_from is not None and proc.stdin else None
    watch = _QuietWatch(proc, stuck, stuck_every) if stuck is not None else None
    total = 0
    try:
        if stdout_to is None:
            out_tail = _TailReader(proc.stdout)
            out_tail.join()
        else:
            # read1: what the pipe holds now, so the sink sees data as it comes
            while chunk := proc.stdout.read1(CHUNK):  # type: ignore[attr-defined]
                stdout_to(chunk)
                total += len(chunk)
                if watch is not None:
                    watch.progress += 1
        if feeder is not None:
            feeder.join()
    except BaseException as error:
        proc.kill()
        proc.wait()
        if watch is not None and watch.reason is not None:
            raise watch.reason from error  # what made the sink or feeder fail
        raise
    finally:
        proc.stdout.close()
        if watch is not None:
            watch.stop()
    returncode = proc.wait()
    if watch is not None and watch.reason is not None:
        raise watch.reason
    tail = _tail(stderr.join(), secrets)
    if returncode != 0:
        raise CommandFailed(argv, returncode, tail, op, secrets)
    return Streamed(stderr_tail=tail, stdout_bytes=total)
