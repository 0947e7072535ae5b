"""Secrets of the test bed must never show: not in any process's argv, not in any output.

`SecretsWatch` scans `/proc/*/cmdline` every few milliseconds in a thread for the whole
session, and is handed every text the suite sees (trackerbackup's console output, which
is what the journal receives; the tests' own reports; the written docs). A hit records
where, never the secret itself.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

SCAN_EVERY_S = 0.005


@dataclass
class SecretsWatch:
    secrets: dict[str, str] = field(default_factory=dict)  # secret -> its name
    hits: list[str] = field(default_factory=list)
    scans: int = 0
    texts: int = 0
    journal_entries: int = 0  # of those texts, journal entries (every field scanned)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def add(self, **named: str) -> None:
        with self._lock:
            self.secrets.update({value: name for name, value in named.items() if value})

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="secrets-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(SCAN_EVERY_S):
            self.scan_processes()

    def scan_processes(self) -> None:
        with self._lock:
            secrets = dict(self.secrets)
        if not secrets:
            return
        own = str(os.getpid())
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or entry.name == own:
                continue
            try:
                argv = Path(entry.path, "cmdline").read_bytes()
            except OSError:
                continue  # gone meanwhile
            for secret, name in secrets.items():
                if secret.encode() in argv:
                    program = argv.split(b"\0")[0].decode(errors="replace")
                    self._hit(f"{name} in the argv of PID {entry.name}: {program}")
        self.scans += 1

    def scan_text(self, text: str, where: str) -> None:
        with self._lock:
            secrets = dict(self.secrets)
        self.texts += 1
        for secret, name in secrets.items():
            if secret in text:
                self._hit(f"{name} in {where}")

    def _hit(self, what: str) -> None:
        with self._lock:
            if what not in self.hits:
                self.hits.append(what)
