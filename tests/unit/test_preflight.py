"""What `run` refuses before it writes and what `check` reports."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trackerbackup import config, preflight, unit
from trackerbackup.errors import ConfigError

SHIPPED_UNIT = Path(__file__).parents[2] / "systemd" / "trackerbackup@.service"
PING = "https://hc-ping.com/0f1e2d3c-s3cret"


def site(tmp_path: Path, text: str = "", mode: int = 0o600) -> config.Config:
    path = tmp_path / "trackerbackup.toml"
    path.write_text(f'[general]\nbackup_dir = "{tmp_path}/backups"\n'
                    f'run_dir = "{tmp_path}/run"\n{text}')
    path.chmod(mode)
    return config.load(path)


def messages(conf: config.Config, unit_dirs: tuple[Path, ...] = ()) -> list[tuple[bool, str]]:
    return [(f.problem, f.message) for f in preflight.check_findings(
        conf, ("database",), unit_dirs)]


def test_a_config_with_secrets_readable_by_others_is_refused_by_run_and_warned_by_check(
    tmp_path: Path
) -> None:
    conf = site(tmp_path, f'[monitoring]\nping_success = "{PING}"\n', mode=0o644)
    with pytest.raises(ConfigError) as caught:
        preflight.refuse_unsafe_config(conf)
    assert caught.value.exit_code == 2
    assert "readable by other users (mode 0644) while it holds secrets " \
           "(monitoring.ping_success)" in str(caught.value)
    assert f"chmod 600 {conf.source}" in str(caught.value)
    assert "s3cret" not in str(caught.value)
    [(problem, _message)] = [m for m in messages(conf) if "secrets" in m[1]]
    assert problem is False
    os.chmod(conf.source, 0o600)
    preflight.refuse_unsafe_config(conf)


def test_a_readable_config_without_secrets_is_fine(tmp_path: Path) -> None:
    preflight.refuse_unsafe_config(site(tmp_path, mode=0o644))


@pytest.mark.parametrize("change", ["group-writable", "world-writable", "foreign owner"])
def test_a_config_others_may_change_is_refused(tmp_path: Path, change: str) -> None:
    conf = site(tmp_path)
    if change == "foreign owner":
        os.chown(conf.source, 65534, 65534)
    else:
        os.chmod(conf.source, 0o620 if change == "group-writable" else 0o602)
    with pytest.raises(ConfigError, match="could make root run any program"):
        preflight.refuse_unsafe_config(conf)
    assert any(problem and "any program" in message for problem, message in messages(conf))


def test_check_reports_an_unsafe_backup_dir_and_tolerates_an_absent_one(
    tmp_path: Path
) -> None:
    conf = site(tmp_path)
    assert messages(conf) == []  # absent: the first run creates it
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "backups").symlink_to(tmp_path / "elsewhere")
    [(problem, message)] = messages(conf)
    assert problem
    assert "general.backup_dir is a symbolic link, not a directory" in message


def test_check_warns_about_a_loose_mode_the_next_run_tightens(tmp_path: Path) -> None:
    conf = site(tmp_path)
    (tmp_path / "backups").mkdir(mode=0o755)
    (tmp_path / "backups").chmod(0o755)
    assert messages(conf) == [
        (False, f"general.backup_dir {tmp_path}/backups has mode 0755: the next run "
                "tightens it to 0700")]


def test_check_names_the_drop_in_a_backup_dir_outside_the_unit_needs(tmp_path: Path) -> None:
    units = tmp_path / "units"
    units.mkdir()
    # tmp_path lies under /tmp, which PrivateTmp=yes would hide first (see test_unit.py)
    (units / unit.TEMPLATE).write_text(
        SHIPPED_UNIT.read_text().replace("PrivateTmp=yes", "PrivateTmp=no"))
    conf = site(tmp_path)
    findings = messages(conf, (units,))
    assert [problem for problem, _ in findings] == [True, True]
    backup_dir, run_dir = (message for _, message in findings)
    assert backup_dir.startswith(f"general.backup_dir {tmp_path}/backups: "
                                 "trackerbackup@database.service: the unit has "
                                 "ProtectSystem=strict")
    assert backup_dir.endswith("hint: add it to the unit: 'systemctl edit "
                               "trackerbackup@.service', then [Service] "
                               f"ReadWritePaths={tmp_path}/backups")
    assert run_dir.startswith(f"general.run_dir {tmp_path}/run: ")


def test_check_reports_a_run_dir_others_could_plant_locks_or_markers_in(tmp_path: Path) -> None:
    conf = site(tmp_path)
    (tmp_path / "run").mkdir(mode=0o700)
    (tmp_path / "run").chmod(0o777)
    [(problem, message)] = messages(conf)
    assert problem
    assert "general.run_dir is writable by other users (mode 0777)" in message
    assert "open the run directory" in message
