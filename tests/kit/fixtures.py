"""pytest fixtures of the test kit, for every tier (registered in tests/conftest.py).

Nothing here touches Docker: the test bed's fixtures are registered by the tiers that use
them (tests/e2e/conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kit.pings import PROXY_VARIABLES, PingRecorder
from tests.testbed.tree import create_tree


@pytest.fixture
def ping_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[PingRecorder]:
    """A recording ping service on 127.0.0.1, reached directly (proxy variables unset, for
    this process and the commands it starts)."""
    for variable in PROXY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    with PingRecorder() as recorder:
        yield recorder


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """The deployer's tree under `site` (tests.testbed.tree) and `site/trackerbackup.toml`
    for it, backups in `site/backups`. `general.docker` names no program: runs need no
    Docker, and the database type reads `sqlite.host_path` directly."""
    compose = create_tree(tmp_path)
    (tmp_path / "trackerbackup.toml").write_text(
        f'[general]\ncompose_dir = "{compose}"\nbackup_dir = "{tmp_path}/backups"\n'
        f'run_dir = "{tmp_path}/run"\ndocker = "{tmp_path}/no-docker"\n'
        f'[sqlite]\nhost_path = "{compose}/storage/tracker/lib/database/tracker.db"\n'
    )
    return tmp_path
