"""The Debian package on the operator's machine: install, configure, schedule, upgrade,
remove and purge, as in the runbook (issue 5).

The machine is the test bed's VM (Debian 12, systemd as PID 1, the unit sandbox enforced)
on a stack whose tracker stand-in writes live; see package_vm.py. The package is built
once per session with debian/build-deb.sh (or taken from $TRACKERBACKUP_DEB) and
installed with apt, offline. Each test stands on the fixtures of conftest.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.e2e.package_vm import (
    APT_ENV,
    CONFIG,
    INSTALLED,
    WANTS,
    Host,
    add_service_drop_in,
    configure,
    journal_text,
    move_database_schedule,
    package_status,
    remove_service_drop_in,
    show,
    start,
)
from tests.testbed.vm import VM
from trackerbackup.backup_types import UNIT_INSTANCES

pytestmark = [pytest.mark.testbed, pytest.mark.vm]


# --- install and configure ----------------------------------------------------------------


def test_apt_installs_the_package_offline_and_enables_nothing(fresh_install: Host) -> None:
    vm = fresh_install.vm  # the fixture ran `apt-get install ./trackerbackup_*.deb`, offline
    status = vm.exec("dpkg-query", "-W", "-f=${Status} ${Version}", "trackerbackup").stdout
    assert status.startswith(f"{INSTALLED} ")
    assert vm.exec("trackerbackup", "--version").stdout.startswith("trackerbackup ")
    assert vm.exec("stat", "-c", "%a %U:%G", CONFIG).stdout.split() == ["600", "root:root"]
    for backup_type in UNIT_INSTANCES:
        timer = f"trackerbackup@{backup_type}.timer"
        state = vm.exec("systemctl", "is-enabled", timer, check=False).stdout.strip()
        assert state == "disabled", timer
    assert "trackerbackup" not in vm.exec("systemctl", "list-timers", "--all").stdout


def test_the_config_points_at_the_stack_and_stays_root_only(installed: Host) -> None:
    configure(installed)
    vm = installed.vm
    assert vm.exec("stat", "-c", "%a %U:%G", CONFIG).stdout.split() == ["600", "root:root"]
    check = vm.trackerbackup("check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"configuration {CONFIG}: valid" in check.stdout


def test_the_unit_sandbox_needs_the_drop_in_for_a_backup_dir_elsewhere(
    configured: Host,
) -> None:
    """Without ReadWritePaths= for the stack's dirs, ProtectSystem=strict refuses the run:
    proof that the sandbox is enforced in this VM, and why trackerbackup(8) asks for the
    drop-in."""
    vm = configured.vm
    remove_service_drop_in(vm)
    try:
        run = start(vm, "trackerbackup@selective.service")
        assert run.returncode != 0
        assert run.failed_with == "exit-code"
        assert "Read-only file system" in journal_text(vm, run.entries[0], "-u", run.unit)
    finally:
        add_service_drop_in(configured)
        vm.exec("systemctl", "reset-failed")
    assert start(vm, "trackerbackup@selective.service").succeeded


# --- schedules and upgrades ---------------------------------------------------------------


def next_calendar_time(hour: int, minute: int) -> datetime:
    now = datetime.now(UTC)
    at = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return at if at > now else at + timedelta(days=1)


def systemd_time(text: str) -> datetime:
    """'Thu 2026-11-26 05:19:10 UTC' (the VM runs in UTC)."""
    return datetime.strptime(text.strip(), "%a %Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC)


def test_a_systemctl_edit_drop_in_moves_the_schedule(installed: Host) -> None:
    vm = installed.vm
    timer = "trackerbackup@database.timer"
    move_database_schedule(vm, 5, 17)
    expected = next_calendar_time(5, 17)

    props = show(vm, timer, "TimersCalendar", "NextElapseUSecRealtime")
    assert "OnCalendar=*-*-* 05:17:00" in props["TimersCalendar"]
    assert "03:00:00" not in props["TimersCalendar"]  # the shipped 10-schedule.conf
    assert f"next_elapse={expected:%a %Y-%m-%d %H:%M:%S} UTC" in props["TimersCalendar"]
    # The unit's RandomizedDelaySec=10min with FixedRandomDelay=yes comes on top.
    next_run = systemd_time(props["NextElapseUSecRealtime"])
    assert expected <= next_run <= expected + timedelta(minutes=10)
    timers = vm.exec("systemctl", "list-timers", "trackerbackup@*", "--no-pager").stdout
    [line] = [line for line in timers.splitlines() if timer in line]
    assert line.startswith(f"{next_run:%a %Y-%m-%d %H:%M:%S} UTC")


def test_reinstalling_the_package_keeps_each_timer_enabled_or_disabled(
    configured: Host, deb: Path
) -> None:
    vm = configured.vm
    move_database_schedule(vm, 5, 17)  # enables the database timer
    vm.exec("systemctl", "disable", "--now", "trackerbackup@selective.timer")
    config = vm.exec("cat", CONFIG).stdout

    vm.exec("apt-get", "install", "-y", "--reinstall", f"/root/{deb.name}", env=APT_ENV)
    assert_timers(vm, enabled="database", disabled="selective")
    vm.exec("dpkg", "-i", f"/root/{deb.name}", env=APT_ENV)  # the upgrade path of dpkg
    assert_timers(vm, enabled="database", disabled="selective")
    assert vm.exec("cat", CONFIG).stdout == config  # the modified conffile is kept
    assert vm.exec("stat", "-c", "%a", CONFIG).stdout.strip() == "600"
    assert "05:17:00" in show(vm, "trackerbackup@database.timer", "TimersCalendar")[
        "TimersCalendar"]


def assert_timers(vm: VM, *, enabled: str, disabled: str) -> None:
    def state(backup_type: str, verb: str) -> str:
        return vm.exec("systemctl", verb, f"trackerbackup@{backup_type}.timer",
                       check=False).stdout.strip()

    assert (state(enabled, "is-enabled"), state(enabled, "is-active")) == ("enabled", "active")
    assert (state(disabled, "is-enabled"), state(disabled, "is-active")) == ("disabled",
                                                                             "inactive")


# --- remove and purge ---------------------------------------------------------------------


def backup_names(machine: Host) -> list[str]:
    return sorted(p.name for p in (machine.stack.backup_dir / "database").iterdir())


def test_remove_keeps_the_config_the_backups_and_the_timer_enablement(
    backed_up: Host,
) -> None:
    vm = backed_up.vm
    timer = "trackerbackup@database.timer"
    vm.exec("systemctl", "enable", "--now", timer)
    assert vm.exec("systemctl", "is-active", timer).stdout.strip() == "active"
    backups = backup_names(backed_up)
    assert backups

    vm.exec("apt-get", "remove", "-y", "trackerbackup", env=APT_ENV)

    assert package_status(vm) == "deinstall ok config-files"
    assert vm.exec("test", "-x", "/usr/bin/trackerbackup", check=False).returncode == 1
    assert vm.exec("stat", "-c", "%a", CONFIG).stdout.strip() == "600"
    assert vm.exec("test", "-L", f"{WANTS}/{timer}", check=False).returncode == 0
    # prerm stopped the timer: none fires while the package is gone.
    assert vm.exec("systemctl", "is-active", timer, check=False).stdout.strip() == "inactive"
    assert backup_names(backed_up) == backups
    vm.exec("test", "-d", "/var/backups/trackerbackup")


def test_purge_removes_config_and_enablement_but_never_backups(removed: Host) -> None:
    vm = removed.vm
    backups = backup_names(removed)
    assert backups

    vm.exec("apt-get", "purge", "-y", "trackerbackup", env=APT_ENV)

    assert package_status(vm) is None
    assert vm.exec("test", "-e", "/etc/trackerbackup", check=False).returncode == 1
    links = vm.exec("ls", WANTS).stdout.split()
    assert [name for name in links if name.startswith("trackerbackup")] == []
    assert backup_names(removed) == backups
    vm.exec("test", "-d", "/var/backups/trackerbackup")
