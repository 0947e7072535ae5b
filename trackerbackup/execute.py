"""The only module that starts processes.

Callers build argv tuples and hand them over. Every exit status is checked; a failure
raises `CommandFailed` carrying the tail of stderr with every known secret masked.
Secrets never travel in argv: pass them through `env` or an inherited pipe.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence

from trackerbackup.errors import BackupFailed, EnvironmentProblem

STDERR_TAIL_BYTES = 4000
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
