"""Logging to journald with structured fields, or readable lines on a terminal.

Every record of an event carries a fixed MESSAGE_ID (see `Event`), so operators can
filter (`journalctl MESSAGE_ID=...`) and `journalctl -x` shows the catalog entry.
Field names are the only strings other modules need from here.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
import time
from enum import Enum
from typing import Any


class Event(Enum):
    """Each kind of event and its journald MESSAGE_ID (never change a published id)."""

    RUN_STARTED = "04eced8de9234198b7093312b14649ef"
    RUN_SUCCEEDED = "63eda6234b294f85951e53ffd583bfdf"
    RUN_FAILED = "b42e21512bf64308a57ddcd2f9ab405b"
    PRUNED = "6a93d45794f341b5872f21d80f786b4f"
    PARTIAL_REMOVED = "dec9427577614ced810ccb25118ea234"
    PATH_MISSING = "1766ad87066f43fe9102f6ef93b51be5"
    LOCK_BUSY = "c6d2dc0f7d1e488782b0e807e3d05194"
    CONFIG_INVALID = "b94ad343ab5547b2a2af3a0f42085841"
    SNAPSHOT_TAKEN = "5e5d5705d25d48429e77e404d572a268"
    CRITICAL_SNAPSHOT_TAKEN = "25b2988b341a4ee297059cdea067ab2d"
    CONTAINER_PAUSED = "4df33f71f9dd408c9a5677b2cfe82cb8"
    CONTAINER_RESUMED = "881ced7dab4842e6aba878066e87b9d5"
    VERIFY_FAILED = "90ea52a59ab84112a6f1f7ef07b97392"
    UNIT_FAILED = "3d511ab16dcd484da140b695b9a8514b"
    BACKUP_VERIFIED = "1758eefeaeb14fa2a7af5b2e067cb5b2"
    VERIFICATION_FAILED = "c54bfe9ba34c42dba8fc75acc06ee274"
    RESTORE_STARTED = "b2211b6f34ce4cb9b70c302bffe357f4"
    RESTORE_SAFETY_COPY = "dd310b784bb84cbcbce245e27a209bf7"
    RESTORE_FINISHED = "9ab88500e1a449f18916e99ce690e10d"
    RESTORE_FAILED = "e521c44161fb41868987049512db57ea"
    OFFSITE_PUSHED = "e3bc85382fe945f78d4557037929722b"
    OFFSITE_PUSH_FAILED = "3d513f5466f2484a95aa8415ff245245"
    OFFSITE_PRUNED = "e3fc4dd588744b1fb5ca01c1525f1c51"
    OFFSITE_LOCK_REMOVED = "c40d82280564416481947152244bb445"
    OFFSITE_STORAGE_FULL = "fe16c7b1a22142c39e589acb391b6181"


PRIORITY_BY_LEVEL = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}

LOGGER_NAME = "trackerbackup"


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def printable(text: str) -> str:
    """`text` safe for a manifest, the journal and a terminal: bytes that are not UTF-8 (a
    file name decoded with surrogateescape) become \\xNN, control characters too."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that did not come from a file name
        raw = text.encode("utf-8", "backslashreplace")
    decoded = raw.decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", decoded)


def fields(event: Event | None = None, **extra: Any) -> dict[str, Any]:
    """`extra=` for a logging call: journal fields as TRACKERBACKUP_<NAME>."""
    journal: dict[str, str] = {}
    if event is not None:
        journal["MESSAGE_ID"] = event.value
        journal["TRACKERBACKUP_EVENT"] = event.name
    for key, value in extra.items():
        if value is not None:
            journal[f"TRACKERBACKUP_{key.upper()}"] = printable(str(value))
    return {"journal": journal}


class JournalHandler(logging.Handler):
    """Sends each record to journald with its structured fields (python3-systemd)."""

    def __init__(self) -> None:
        super().__init__()
        # imported here: only needed under systemd
        self._send = importlib.import_module("systemd.journal").send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            extra: dict[str, str] = dict(getattr(record, "journal", {}))
            self._send(
                printable_lines(self.format(record)),
                PRIORITY=str(PRIORITY_BY_LEVEL.get(record.levelno, 6)),
                SYSLOG_IDENTIFIER="trackerbackup",
                CODE_FILE=record.pathname,
                CODE_LINE=record.lineno,
                CODE_FUNC=record.funcName,
                **extra,
            )
        except Exception:
            self.handleError(record)


def printable_lines(message: str) -> str:
    """`printable` line by line: newlines (hints, tracebacks) are kept."""
    return "\n".join(printable(line) for line in message.split("\n"))


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        return printable_lines(prefix + record.getMessage())


def running_under_systemd() -> bool:
    # systemd sets INVOCATION_ID for every unit it starts; JOURNAL_STREAM when stdout
    # or stderr goes to the journal.
    return bool(os.environ.get("INVOCATION_ID") or os.environ.get("JOURNAL_STREAM"))


class Progress:
    """A one-line progress indicator for long steps, shown only on an interactive console."""

    enabled = False  # set by setup(): console target and stderr is a terminal
    INTERVAL = 0.5

    def __init__(self, label: str, total: int | None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._shown_at = 0.0

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self.enabled and now - self._shown_at >= self.INTERVAL:
            self._shown_at = now
            self._show()

    def _show(self) -> None:
        mib = self.done / 2**20
        if self.total:
            percent = min(100.0, 100.0 * self.done / self.total)
            text = f"{self.label}: {mib:,.0f} MiB of {self.total / 2**20:,.0f} ({percent:.0f}%)"
        else:
            text = f"{self.label}: {mib:,.0f} MiB"
        sys.stderr.write(f"\r\x1b[K{text}")
        sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled and self._shown_at:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def setup(target: str = "auto", verbose: bool = False) -> None:
    """target: 'auto' (journal under systemd, else console), 'journal' or 'console'."""
    logger = get_logger()
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    use_journal = target == "journal" or (target == "auto" and running_under_systemd())
    handler: logging.Handler
    if use_journal:
        handler = JournalHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(ConsoleFormatter())
    Progress.enabled = not use_journal and sys.stderr.isatty()
    logger.addHandler(handler)
