"""What the OnFailure= unit runs: `trackerbackup notify-failure TYPE`."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.kit.cli import trackerbackup
from tests.kit.pings import PingRecorder


def test_failure_is_pinged_and_the_operator_hook_runs(tmp_path: Path,
                                                      ping_server: PingRecorder) -> None:
    out = tmp_path / "hook.out"
    hook = f"import os, sys; open({str(out)!r}, 'w').write(os.environ['TRACKERBACKUP_TYPE'])"
    config = tmp_path / "trackerbackup.toml"
    config.write_text(
        f'[general]\nbackup_dir = "{tmp_path}/b"\nrun_dir = "{tmp_path}/r"\n'
        f'[monitoring]\nping_failure = "{ping_server.url}/ping/secret-uuid/fail"\n'
        f'failure_command = ["{sys.executable}", "-c", "{hook}"]\n'.replace("\\", "\\\\")
    )
    result = trackerbackup(config, "notify-failure", "database", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "trackerbackup@database.service failed" in result.stderr
    assert out.read_text() == "database"
    assert [(p.method, p.path) for p in ping_server.received] == [
        ("POST", "/ping/secret-uuid/fail")]
    assert "secret-uuid" not in result.stderr  # ping URLs are never logged in full


def test_relative_hook_program_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "trackerbackup.toml"
    config.write_text('[monitoring]\nfailure_command = ["notify-me"]\n')
    result = trackerbackup(config, "notify-failure", "database")
    assert result.returncode == 2
    assert "line 2: monitoring.failure_command" in result.stderr
