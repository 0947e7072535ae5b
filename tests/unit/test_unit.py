"""Where the systemd unit lets a run write, read from unit files the way systemd merges them."""

from __future__ import annotations

from pathlib import Path

import pytest

from trackerbackup import unit

SHIPPED = Path(__file__).parents[2] / "systemd" / "trackerbackup@.service"


@pytest.fixture
def unit_dirs(tmp_path: Path) -> tuple[Path, ...]:
    """/etc/systemd/system and /lib/systemd/system of a host with the package installed."""
    etc, lib = tmp_path / "etc", tmp_path / "lib"
    etc.mkdir()
    lib.mkdir()
    (lib / unit.TEMPLATE).write_text(SHIPPED.read_text())
    return etc, lib


def drop_in(directory: Path, unit_name: str, name: str, text: str) -> None:
    path = directory / f"{unit_name}.d" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_shipped_unit_writes_only_the_default_paths(unit_dirs: tuple[Path, ...]) -> None:
    sandbox = unit.sandbox("database", unit_dirs)
    assert sandbox is not None
    assert sandbox.strict
    assert sandbox.private_tmp
    assert sandbox.refusal(Path("/var/backups/trackerbackup")) is None
    assert sandbox.refusal(Path("/var/backups/trackerbackup/database/x")) is None
    assert sandbox.refusal(Path("/run/trackerbackup")) is None  # RuntimeDirectory=
    refusal = sandbox.refusal(Path("/srv/backups"))
    assert refusal is not None
    why, fix = refusal
    assert "ProtectSystem=strict" in why
    assert "/var/backups/trackerbackup" in why
    assert "'Read-only file system'" in why
    assert fix == ("add it to the unit: 'systemctl edit trackerbackup@.service', then "
                   "[Service] ReadWritePaths=/srv/backups")
    assert sandbox.refusal(Path("/var/backups/trackerbackup-old")) is not None


def test_drop_ins_add_paths_and_an_empty_assignment_resets(
    unit_dirs: tuple[Path, ...]
) -> None:
    etc, _ = unit_dirs
    drop_in(etc, unit.TEMPLATE, "override.conf",
            "[Service]\nReadWritePaths=/srv/backups \"/mnt/with space\"\n")
    sandbox = unit.sandbox("selective", unit_dirs)
    assert sandbox is not None
    assert sandbox.refusal(Path("/srv/backups/tb")) is None
    assert sandbox.refusal(Path("/mnt/with space")) is None
    assert sandbox.refusal(Path("/var/backups/trackerbackup")) is None
    drop_in(etc, "trackerbackup@selective.service", "zz-only.conf",
            "[Service]\nReadWritePaths=\nReadWritePaths=-/data\n")
    selective = unit.sandbox("selective", unit_dirs)
    assert selective is not None
    assert selective.refusal(Path("/data/b")) is None
    assert selective.refusal(Path("/srv/backups")) is not None
    database = unit.sandbox("database", unit_dirs)
    assert database is not None
    assert database.refusal(Path("/srv/backups")) is None


def test_private_tmp_would_lose_the_backups(unit_dirs: tuple[Path, ...]) -> None:
    etc, _ = unit_dirs
    drop_in(etc, unit.TEMPLATE, "tmp.conf", "[Service]\nReadWritePaths=/tmp/backups\n")
    sandbox = unit.sandbox("database", unit_dirs)
    assert sandbox is not None
    refusal = sandbox.refusal(Path("/tmp/backups"))
    assert refusal is not None
    assert "PrivateTmp=yes" in refusal[0]


def test_no_installed_unit_means_nothing_to_check(tmp_path: Path) -> None:
    assert unit.sandbox("database", (tmp_path,)) is None


def test_an_unsandboxed_unit_may_write_anywhere(tmp_path: Path) -> None:
    (tmp_path / unit.TEMPLATE).write_text("[Service]\nExecStart=/usr/bin/trackerbackup run %i\n")
    sandbox = unit.sandbox("database", (tmp_path,))
    assert sandbox is not None
    assert sandbox.refusal(Path("/srv/backups")) is None
