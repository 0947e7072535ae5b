"""The checkout's `trackerbackup` command line, run as the operator runs it (a new process).

Inside the test bed's VM the installed package is run instead: `VM.trackerbackup`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 600.0
CONFIG_NAME = "trackerbackup.toml"


def command(config: Path, *args: str) -> list[str]:
    """argv of `trackerbackup --config CONFIG --log-target console ARGS` from this checkout;
    `config` may be a directory holding trackerbackup.toml (the kit's `site`)."""
    config_file = config / CONFIG_NAME if config.is_dir() else config
    return [sys.executable, "-m", "trackerbackup", "--config", str(config_file),
            "--log-target", "console", *args]


def environment() -> dict[str, str]:
    """This process's environment, with the checkout first on the module path."""
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def trackerbackup(config: Path, *args: str, user: int | None = None, umask: int = -1,
                  timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run the command to its end (as `user`, with `umask`, if given); stdout and stderr as
    text, any exit status returned."""
    return subprocess.run(command(config, *args), cwd=ROOT, env=environment(), user=user,
                          umask=umask, capture_output=True, text=True, check=False,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def start_trackerbackup(config: Path, *args: str) -> subprocess.Popen[str]:
    """Start the command in the background (to signal it mid-run); read it with
    `communicate()`."""
    return subprocess.Popen(command(config, *args), cwd=ROOT, env=environment(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
