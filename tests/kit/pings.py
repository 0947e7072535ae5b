"""A local stand-in for a healthchecks-style ping service: it records every request."""

from __future__ import annotations

import http.server
import threading
from dataclasses import dataclass
from types import TracebackType

# urllib would send the pings to a proxy named by any of these.
PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                   "ALL_PROXY")


@dataclass(frozen=True)
class Ping:
    method: str
    path: str
    body: bytes


class PingRecorder:
    """`with PingRecorder() as pings:` an HTTP server on 127.0.0.1 that answers every GET
    and POST with `pings.status` and appends it to `pings.received`."""

    def __init__(self) -> None:
        self.received: list[Ping] = []
        self.status = 200
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)

    @property
    def url(self) -> str:
        """The base URL: append any path."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> PingRecorder:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _Server(http.server.ThreadingHTTPServer):
    def __init__(self, recorder: PingRecorder) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.recorder = recorder


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        recorder = self.server.recorder
        recorder.received.append(Ping(self.command, self.path, body))
        self.send_response(recorder.status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"OK")

    do_GET = _answer
    do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass
