"""What the OnFailure= unit runs: `trackerbackup notify-failure TYPE`."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

ROOT = Path(__file__).parents[2]


class _Recorder(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        _Recorder.bodies.append(self.rfile.read(length))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def ping_server() -> Iterator[str]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Recorder.bodies.clear()
    yield f"http://127.0.0.1:{server.server_port}/ping/secret-uuid/fail"
    server.shutdown()


def test_failure_is_pinged_and_the_operator_hook_runs(tmp_path: Path, ping_server: str) -> None:
    out = tmp_path / "hook.out"
    hook = f"import os, sys; open({str(out)!r}, 'w').write(os.environ['TRACKERBACKUP_TYPE'])"
    config = tmp_path / "trackerbackup.toml"
    config.write_text(
        f'[general]\nbackup_dir = "{tmp_path}/b"\nrun_dir = "{tmp_path}/r"\n'
        f'[monitoring]\nping_failure = "{ping_server}"\n'
        f'failure_command = ["{sys.executable}", "-c", "{hook}"]\n'.replace("\\", "\\\\")
    )
    result = subprocess.run(
        [sys.executable, "-m", "trackerbackup", "--config", str(config), "--log-target",
         "console", "notify-failure", "database"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        check=False, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "trackerbackup@database.service failed" in result.stderr
    assert out.read_text() == "database"
    assert len(_Recorder.bodies) == 1
    assert "secret-uuid" not in result.stderr  # ping URLs are never logged in full


def test_relative_hook_program_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "trackerbackup.toml"
    config.write_text('[monitoring]\nfailure_command = ["notify-me"]\n')
    result = subprocess.run(
        [sys.executable, "-m", "trackerbackup", "--config", str(config), "notify-failure",
         "database"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "line 2: monitoring.failure_command" in result.stderr
