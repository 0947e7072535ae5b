"""What trackerbackup sends to journald, field by field, on a host without journald.

The suite's runs log to the console (its milestones are read there), but under systemd the
same events go to the journal with structured fields (paths, containers, errors) that the
console never shows. `JournalCapture` listens where libsystemd sends (the native protocol
on `/run/systemd/journal/socket`) and `wrap()` runs a command in a private mount namespace
whose `/run/systemd/journal` is the capture's directory, so the real journal of a host
that has one is never touched. Every field of every entry is handed to the secrets watch.
"""

from __future__ import annotations

import os
import socket
import struct
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from tests.faults.secrets_watch import SecretsWatch

JOURNAL_DIR = "/run/systemd/journal"
DATAGRAM_LIMIT = 1 << 22
BIND_AND_EXEC = 'mount --bind "$0" ' + JOURNAL_DIR + ' && exec "$@"'


def parse_entry(payload: bytes) -> dict[str, bytes]:
    """One datagram of journald's native protocol: `KEY=value\\n`, or `KEY\\n`, a 64-bit
    little-endian length, the value and `\\n` (for values holding newlines)."""
    fields: dict[str, bytes] = {}
    at = 0
    while at < len(payload):
        end = payload.index(b"\n", at)
        line = payload[at:end]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            at = end + 1
        else:
            key = line
            (size,) = struct.unpack_from("<Q", payload, end + 1)
            start = end + 1 + 8
            value = payload[start:start + size]
            at = start + size + 1
        fields[key.decode()] = value
    return fields


@dataclass
class JournalCapture:
    watch: SecretsWatch
    entries: list[dict[str, bytes]] = field(default_factory=list)
    _directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="journal-")))
    _socket: socket.socket | None = None
    _thread: threading.Thread | None = None

    def __enter__(self) -> JournalCapture:
        os.makedirs(JOURNAL_DIR, exist_ok=True)  # the mount point (empty on such a host)
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(self._directory / "socket"))
        self._socket.settimeout(0.1)
        self._thread = threading.Thread(target=self._receive, name="journal-capture",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        sock, self._socket = self._socket, None
        if self._thread is not None:
            self._thread.join(timeout=5)
        if sock is not None:
            sock.close()

    def wrap(self, argv: list[str]) -> list[str]:
        """`argv` run with this capture as its journal (and `--log-target journal`)."""
        journal_argv = [a if a != "console" or argv[i - 1] != "--log-target" else "journal"
                        for i, a in enumerate(argv)]
        return ["unshare", "--mount", "sh", "-c", BIND_AND_EXEC, str(self._directory),
                *journal_argv]

    def _receive(self) -> None:
        while (sock := self._socket) is not None:
            try:
                payload, fds, _flags, _addr = socket.recv_fds(sock, DATAGRAM_LIMIT, 1)
            except (TimeoutError, OSError):
                continue
            for fd in fds:  # a large entry comes as a sealed memfd, its offset at the end
                try:
                    payload = os.pread(fd, os.fstat(fd).st_size, 0)
                finally:
                    os.close(fd)
            if payload:
                self._record(parse_entry(payload))

    def _record(self, entry: dict[str, bytes]) -> None:
        self.entries.append(entry)
        self.watch.journal_entries += 1
        for name, value in entry.items():
            self.watch.scan_text(value.decode(errors="replace"), f"journal field {name}")
