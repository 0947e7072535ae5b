"""The Debian package on the operator's machine, step by step as in the runbook (issue 5).

The machine is the test bed's VM: Debian 12 with systemd as PID 1 in a container, the
host's Docker socket, and a test bed stack (tracker stand-in writing live) mounted at the
same path. The VM gets CAP_SYS_ADMIN (`VM(sandbox=True)`), so systemd really builds the
unit's mount namespace: ProtectSystem=strict, ReadWritePaths= and PrivateTmp= are
enforced, as on a real host (without it systemd in a container skips them silently).
So the stacks live under /srv/trackerbackup-testbed, not /tmp: PrivateTmp= would hide
them from the unit.

The package is built once per session with debian/build-deb.sh (or taken from
$TRACKERBACKUP_DEB, to test an artifact built elsewhere) and installed with apt, offline.
The operator's steps, in order (the tests of one VM share it and run in file order):

1. install the package, point /etc/trackerbackup/trackerbackup.toml at the stack and add
   the drop-in trackerbackup(8) asks for when backup_dir is elsewhere;
2. run the selective and database backups with systemctl; an unknown type fails clearly;
3. read the runs in the journal: MESSAGE_IDs, structured fields, catalog texts, no secret;
4. move a schedule with a `systemctl edit` drop-in; enablement survives a re-install;
5. a second run of the same type while one runs (on a 2,000,000-row database);
6. `systemctl stop` while the tracker is paused for the copy;
7. remove and purge the package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import astuple, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.testbed.engine import DOCKER, docker
from tests.testbed.images import Images
from tests.testbed.stack import Stack
from tests.testbed.vm import VM
from trackerbackup.backup_types import NAMES, UNIT_INSTANCES
from trackerbackup.log import Event

pytestmark = [pytest.mark.testbed, pytest.mark.vm]

ROOT = Path(__file__).parents[2]
# Not under /tmp or /var/tmp: the unit's PrivateTmp= would hide the stack from it.
STACKS_DIR = Path("/srv/trackerbackup-testbed")
CONFIG = "/etc/trackerbackup/trackerbackup.toml"
# What `systemctl edit trackerbackup@.service` writes; trackerbackup(8), "Sandbox".
SERVICE_DROP_IN = "/etc/systemd/system/trackerbackup@.service.d/testbed.conf"
TIMER_OVERRIDE = "/etc/systemd/system/trackerbackup@database.timer.d/override.conf"
WANTS = "/etc/systemd/system/timers.target.wants"
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}
# systemd's own catalogued messages (systemd/sd-messages.h).
SYSTEMD_UNIT_SUCCESS = "7ad2d189f7e94e70a38c781354912448"  # "Deactivated successfully."
SYSTEMD_UNIT_FAILED = "d9b373ed55a64feb8242e02dbe79a49c"  # "Failed with result '...'"
# The long run of steps 5 and 6: the tracker is paused for every copy (budget 0 s), and
# quick_check keeps each run around ten seconds.
LONG_RUN_CONFIG = """
[sqlite]
max_writer_stall = 0.0
over_budget = "pause"
integrity_check = "quick"
"""
# Step 6, inside the VM: start a run, wait until the tracker is paused for the copy
# (marker written, then `docker inspect` says paused), then `systemctl stop` it.
STOP_WHILE_PAUSED = r"""
unit=$0 frozen=$1/frozen container=$2
systemctl start --no-block "$unit"
i=0
until ls "$frozen"/*.json >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -lt 6000 ] || { echo "no pause marker after 60 s"; exit 1; }
    sleep 0.01
done
until [ "$(docker inspect -f '{{.State.Status}}' "$container")" = paused ]; do
    ls "$frozen"/*.json >/dev/null 2>&1 || { echo "missed the pause"; exit 1; }
done
echo "stopping while $container is paused"
systemctl stop "$unit"
"""


# --- the package --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The .deb under test: built once per session from this checkout."""
    given = os.environ.get("TRACKERBACKUP_DEB")
    if given:
        return Path(given).resolve()
    out = tmp_path_factory.mktemp("deb")
    built = subprocess.run(["bash", str(ROOT / "debian/build-deb.sh"), str(out)],
                           capture_output=True, text=True, check=False, timeout=600)
    assert built.returncode == 0, built.stderr
    return Path(built.stdout.strip().splitlines()[-1])


# --- machines: a stack outside /tmp and a sandboxing VM on it -----------------------------


@dataclass
class Host:
    """The operator's machine: the VM and the tracker stack it backs up."""

    vm: VM
    stack: Stack


@contextmanager
def host(images: Images, **stack_kwargs: Any) -> Iterator[Host]:
    STACKS_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="vm-", dir=STACKS_DIR))
    try:
        with Stack(images=images, root=root, **stack_kwargs) as stack, \
                VM(stack, images=images, sandbox=True) as vm:
            yield Host(vm, stack)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        with suppress(OSError):
            STACKS_DIR.rmdir()  # only once no other session's stack is left in it


@pytest.fixture(scope="module")
def machine(images: Images, deb: Path) -> Iterator[Host]:
    """Steps 1-4 and 7: a small SQLite stack (2,000 torrents), the package installed."""
    with host(images, flavour="sqlite") as machine:
        machine.vm.install_deb(deb)
        yield machine


@pytest.fixture(scope="module")
def long_machine(images: Images, deb: Path) -> Iterator[Host]:
    """Steps 5 and 6: a 2,000,000-row database (213 MB), runs that last."""
    with host(images, flavour="sqlite", rows=2_000_000) as machine:
        machine.vm.install_deb(deb)
        configure(machine, LONG_RUN_CONFIG)
        yield machine


def configure(machine: Host, extra: str = "") -> None:
    """The stack's config (+ `extra`) as the installed config, and the sandbox drop-in."""
    install_config(machine.vm, machine.stack.config_path.read_text() + extra)
    add_service_drop_in(machine)


def install_config(vm: VM, text: str) -> None:
    """Replace the configuration the way an editor does, keeping it root-only (0600)."""
    vm.exec("sh", "-c", 'umask 077 && cat > "$0.new" && mv "$0.new" "$0"', CONFIG,
            input_text=text)


def add_service_drop_in(machine: Host) -> None:
    """trackerbackup(8): a backup_dir or deployment elsewhere needs ReadWritePaths=."""
    stack = machine.stack
    writable = " ".join(str(p) for p in (stack.backup_dir, stack.run_dir, stack.storage_dir))
    write_unit_file(machine.vm, SERVICE_DROP_IN, f"[Service]\nReadWritePaths={writable}\n")


def remove_service_drop_in(vm: VM) -> None:
    vm.exec("rm", "-f", SERVICE_DROP_IN)
    vm.exec("systemctl", "daemon-reload")


def write_unit_file(vm: VM, path: str, text: str) -> None:
    """What `systemctl edit` does: write the drop-in, then daemon-reload."""
    vm.exec("mkdir", "-p", str(Path(path).parent))
    vm.write_file(path, text)
    vm.exec("systemctl", "daemon-reload")


def trackerbackup(vm: VM, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI by hand in a root shell of the VM (outside any unit)."""
    return vm.exec("trackerbackup", *args, check=False, timeout=600)


def listed(vm: VM, backup_type: str) -> list[dict[str, Any]]:
    result = trackerbackup(vm, "list", backup_type, "--json")
    assert result.returncode == 0, result.stderr
    backups: list[dict[str, Any]] = json.loads(result.stdout)
    return backups


def partials(stack: Stack, backup_type: str) -> list[str]:
    directory = stack.backup_dir / backup_type
    return sorted(p.name for p in directory.glob(".partial-*")) if directory.is_dir() else []


def container_state(name: str) -> str:
    return docker("inspect", "-f", "{{.State.Status}}", name).strip()


# --- the journal --------------------------------------------------------------------------


def cursor(vm: VM) -> str:
    """The journal's current end: read what comes after it."""
    out = vm.exec("journalctl", "-n", "0", "--show-cursor", "-q").stdout
    return out.rsplit("-- cursor: ", 1)[1].strip()


def journal(vm: VM, after: str, *args: str) -> list[dict[str, Any]]:
    """Journal entries after the cursor `after` as JSON (`args`: -u UNIT, FIELD=value, ...).

    Not `--after-cursor`: with matches, systemd 252 skips the first matching entry (it
    assumes the cursor's own entry matched). `--cursor` includes it; dropped here."""
    vm.exec("journalctl", "--sync")
    out = vm.exec("journalctl", f"--cursor={after}", "-o", "json", "--no-pager", *args,
                  check=False).stdout
    entries = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [e for e in entries if e["__CURSOR"] != after]


def journal_text(vm: VM, first: dict[str, Any], *args: str) -> str:
    """`journalctl -x` from the entry `first` on, as an operator reads it: messages with
    their catalog texts."""
    return vm.exec("journalctl", "-x", f"--cursor={first['__CURSOR']}", "--no-pager", *args,
                   check=False).stdout


def events(entries: list[dict[str, Any]]) -> list[str]:
    return [e["TRACKERBACKUP_EVENT"] for e in entries if "TRACKERBACKUP_EVENT" in e]


def the(entries: list[dict[str, Any]], event: Event) -> dict[str, Any]:
    found = [e for e in entries if e.get("MESSAGE_ID") == event.value]
    assert len(found) == 1, f"{event.name}: {len(found)} entries; events: {events(entries)}"
    return found[0]


def wait_for_entry(vm: VM, after: str, *matches: str, timeout: float = 30) -> dict[str, Any]:
    """The first entry after `after` with every FIELD=value of `matches`."""
    deadline = time.monotonic() + timeout
    while True:
        entries = journal(vm, after, *matches)
        if entries:
            return entries[0]
        assert time.monotonic() < deadline, f"no journal entry {matches} in {timeout:.0f} s"
        time.sleep(0.3)


def unit_failure_reported(vm: VM, after: str, backup_type: str) -> dict[str, Any]:
    """The UNIT_FAILED entry of trackerbackup-failure@TYPE (OnFailure=), after `after`."""
    return wait_for_entry(vm, after, f"_SYSTEMD_UNIT=trackerbackup-failure@{backup_type}.service",
                          f"MESSAGE_ID={Event.UNIT_FAILED.value}")


def assert_no_secret_in_journal(machine: Host) -> None:
    dump = machine.vm.exec("journalctl", "-o", "json", "--no-pager").stdout
    assert Event.RUN_SUCCEEDED.value in dump  # the whole journal, trackerbackup's runs too
    for secret in astuple(machine.stack.secrets):
        assert secret not in dump


# --- units ---------------------------------------------------------------------------------


@dataclass
class UnitRun:
    """One `systemctl start UNIT` and the unit's journal entries (trackerbackup's and
    systemd's) from just before it."""

    unit: str
    since: str  # the journal cursor just before the start
    returncode: int
    output: str
    entries: list[dict[str, Any]]

    @property
    def succeeded(self) -> bool:
        """systemd logged "Deactivated successfully" (its UNIT_SUCCESS message)."""
        return any(e.get("MESSAGE_ID") == SYSTEMD_UNIT_SUCCESS for e in self.entries)

    @property
    def failed_with(self) -> str | None:
        """UNIT_RESULT of systemd's "Failed with result" message, if any."""
        return next((e.get("UNIT_RESULT") for e in self.entries
                     if e.get("MESSAGE_ID") == SYSTEMD_UNIT_FAILED), None)


def start(vm: VM, unit: str) -> UnitRun:
    """`systemctl start UNIT` (blocks until the oneshot run ends)."""
    before = cursor(vm)
    proc = vm.exec("systemctl", "start", unit, check=False, timeout=600)
    return UnitRun(unit, before, proc.returncode, proc.stdout + proc.stderr,
                   journal(vm, before, "-u", unit))


def show(vm: VM, unit: str, *properties: str) -> dict[str, str]:
    out = vm.exec("systemctl", "show", unit, *(f"--property={p}" for p in properties)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def wait_until_running(machine: Host, unit: str, backup_type: str) -> int:
    """Wait until UNIT's run holds the type's lock; return its PID (the unit's MainPID)."""
    lock = machine.stack.run_dir / f"{backup_type}.lock"
    deadline = time.monotonic() + 30
    while True:
        pid = lock.read_text().strip() if lock.exists() else ""
        if pid:
            assert show(machine.vm, unit, "MainPID")["MainPID"] == pid
            return int(pid)
        assert time.monotonic() < deadline, f"{unit} never took the {backup_type} lock"
        time.sleep(0.05)


def wait_until_inactive(vm: VM, unit: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while show(vm, unit, "ActiveState")["ActiveState"] in ("activating", "active",
                                                          "deactivating"):
        assert time.monotonic() < deadline, f"{unit} still running after {timeout:.0f} s"
        time.sleep(0.3)


# === 1. install ============================================================================


def test_1_apt_installs_the_package_offline_and_enables_nothing(machine: Host) -> None:
    vm = machine.vm  # the fixture ran `apt-get install ./trackerbackup_*.deb`, offline
    status = vm.exec("dpkg-query", "-W", "-f=${Status} ${Version}", "trackerbackup").stdout
    assert status.startswith("install ok installed")
    assert vm.exec("trackerbackup", "--version").stdout.startswith("trackerbackup ")
    assert vm.exec("stat", "-c", "%a %U:%G", CONFIG).stdout.split() == ["600", "root:root"]
    for backup_type in UNIT_INSTANCES:
        timer = f"trackerbackup@{backup_type}.timer"
        state = vm.exec("systemctl", "is-enabled", timer, check=False).stdout.strip()
        assert state == "disabled", timer
    assert "trackerbackup" not in vm.exec("systemctl", "list-timers", "--all").stdout


def test_1_the_config_points_at_the_stack_and_stays_root_only(machine: Host) -> None:
    configure(machine)
    vm = machine.vm
    assert vm.exec("stat", "-c", "%a %U:%G", CONFIG).stdout.split() == ["600", "root:root"]
    check = trackerbackup(vm, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"configuration {CONFIG}: valid" in check.stdout


def test_1_the_unit_sandbox_needs_the_drop_in_for_a_backup_dir_elsewhere(
    machine: Host,
) -> None:
    """Without ReadWritePaths= for the stack's dirs, ProtectSystem=strict refuses the run:
    proof that the sandbox is enforced in this VM, and why trackerbackup(8) asks for the
    drop-in."""
    vm = machine.vm
    remove_service_drop_in(vm)
    try:
        run = start(vm, "trackerbackup@selective.service")
        assert run.returncode != 0
        assert run.failed_with == "exit-code"
        assert "Read-only file system" in journal_text(vm, run.entries[0], "-u", run.unit)
    finally:
        add_service_drop_in(machine)
        vm.exec("systemctl", "reset-failed")
    assert start(vm, "trackerbackup@selective.service").succeeded


# === 2. run the backups with systemctl =====================================================


def test_2_selective_and_database_runs_succeed_without_a_failed_tracker_write(
    machine: Host,
) -> None:
    """A oneshot instance that succeeded goes inactive and may be unloaded at once (then
    `systemctl show` reports defaults), so success is read where it is recorded: the
    exit status of `systemctl start` and systemd's "Deactivated successfully"."""
    vm, stack = machine.vm, machine.stack
    stack.wait_for_commits(100)
    backup_ids = {}
    for backup_type in ("selective", "database"):
        unit = f"trackerbackup@{backup_type}.service"
        run = start(vm, unit)
        assert run.returncode == 0, run.output
        assert run.succeeded, events(run.entries)
        assert show(vm, unit, "Result")["Result"] == "success"
        assert Event.RUN_FAILED.name not in events(run.entries)
        backup_ids[backup_type] = the(run.entries, Event.RUN_SUCCEEDED)["TRACKERBACKUP_ID"]
    status = stack.stop_writer()
    assert status["failed"] == 0, status["errors"]
    assert status["committed"] > 100
    stack.start_writer()  # the tracker keeps writing for the next steps

    for backup_type, backup_id in backup_ids.items():
        backups = {b["id"]: b for b in listed(vm, backup_type)}
        assert backup_id in backups
        assert backups[backup_id]["verified"] is True
        assert backups[backup_id]["path"] == str(stack.backup_dir / backup_type / backup_id)


def test_2_an_unknown_type_fails_clearly_and_its_failure_unit_runs(machine: Host) -> None:
    """Exit 2 with "unknown backup type" and the valid types. That message is a usage
    error, which has no MESSAGE_ID (cli.py maps only ConfigError and LockBusy to events),
    so under `journalctl -x -u trackerbackup@bogus` the catalog texts are systemd's; the
    trackerbackup catalog text for the failure is UNIT_FAILED, which the OnFailure= unit
    logs, under `-u trackerbackup-failure@bogus`."""
    vm = machine.vm
    unit = "trackerbackup@bogus.service"
    run = start(vm, unit)
    assert run.returncode != 0
    assert run.failed_with == "exit-code"
    assert show(vm, unit, "Result", "ExecMainStatus") == {"Result": "exit-code",
                                                          "ExecMainStatus": "2"}
    since = run.since
    text = journal_text(vm, run.entries[0], "-u", unit)
    assert "unknown backup type 'bogus'" in text
    assert f"hint: use one of: {', '.join(NAMES)}" in text
    assert "status=2/INVALIDARGUMENT" in text
    assert "Subject: Unit failed" in text  # systemd's catalog, shown by -x

    reported = unit_failure_reported(vm, since, "bogus")
    assert reported["TRACKERBACKUP_TYPE"] == "bogus"
    failure_text = journal_text(vm, reported, "-u", "trackerbackup-failure@bogus.service")
    assert "Subject: The unit trackerbackup@bogus.service failed" in failure_text
    assert "its OnFailure= unit ran" in failure_text
    vm.exec("systemctl", "reset-failed", unit)


# === 3. the journal ========================================================================


def test_3_a_database_run_logs_structured_fields_with_fixed_message_ids(machine: Host) -> None:
    vm = machine.vm
    run = start(vm, "trackerbackup@database.service")
    assert run.succeeded, run.output
    started = the(run.entries, Event.RUN_STARTED)
    snapshot = the(run.entries, Event.SNAPSHOT_TAKEN)
    succeeded = the(run.entries, Event.RUN_SUCCEEDED)
    for entry in (started, snapshot, succeeded):
        assert entry["TRACKERBACKUP_TYPE"] == "database"
        assert entry["SYSLOG_IDENTIFIER"] == "trackerbackup"
        assert entry["_SYSTEMD_UNIT"] == "trackerbackup@database.service"
    assert snapshot["TRACKERBACKUP_ID"] == succeeded["TRACKERBACKUP_ID"]
    assert int(snapshot["TRACKERBACKUP_STALL_MS"]) >= 0
    assert int(snapshot["TRACKERBACKUP_SIZE"]) > 0  # the database file
    [backup] = [b for b in listed(vm, "database") if b["id"] == succeeded["TRACKERBACKUP_ID"]]
    assert int(succeeded["TRACKERBACKUP_SIZE"]) == backup["size"]
    assert events(run.entries).index("RUN_STARTED") < events(run.entries).index("RUN_SUCCEEDED")

    text = journal_text(vm, run.entries[0], "-u", run.unit)
    assert "Subject: Consistent database snapshot taken for database" in text
    assert f"Subject: Backup {backup['id']} of type database succeeded" in text


def test_3_a_failed_run_shows_the_catalog_text_and_its_failure_unit_runs(
    machine: Host,
) -> None:
    """Forced failure: sqlite.host_path names the tracker's config file, not a database."""
    vm, stack = machine.vm, machine.stack
    not_a_database = stack.tracker_etc / "tracker.toml"
    install_config(vm, stack.config_path.read_text()
                   + f'[sqlite]\nhost_path = "{not_a_database}"\n')
    before = {b["id"] for b in listed(vm, "database")}
    try:
        run = start(vm, "trackerbackup@database.service")
    finally:
        install_config(vm, stack.config_path.read_text())
    assert run.failed_with == "exit-code"
    assert show(vm, run.unit, "ExecMainStatus")["ExecMainStatus"] == "3"
    failed = the(run.entries, Event.RUN_FAILED)
    assert "not an SQLite database" in failed["MESSAGE"]
    assert str(not_a_database) in failed["MESSAGE"]
    assert Event.RUN_SUCCEEDED.name not in events(run.entries)

    since = run.since
    text = journal_text(vm, run.entries[0], "-u", run.unit)
    assert "Subject: Backup of type database failed" in text
    assert "Nothing of this\nrun was recorded as a backup" in text.replace("░░ ", "")
    assert unit_failure_reported(vm, since, "database")["TRACKERBACKUP_TYPE"] == "database"
    assert {b["id"] for b in listed(vm, "database")} == before
    assert partials(stack, "database") == []
    vm.exec("systemctl", "reset-failed", run.unit)
    assert start(vm, run.unit).succeeded  # fixed config: the next run works again


def test_3_no_secret_of_the_stack_appears_in_the_journal(machine: Host) -> None:
    assert_no_secret_in_journal(machine)


# === 4. schedules and upgrades =============================================================


def next_calendar_time(hour: int, minute: int) -> datetime:
    now = datetime.now(UTC)
    at = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return at if at > now else at + timedelta(days=1)


def systemd_time(text: str) -> datetime:
    """'Thu 2026-11-26 05:19:10 UTC' (the VM runs in UTC)."""
    return datetime.strptime(text.strip(), "%a %Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC)


def test_4_a_systemctl_edit_drop_in_moves_the_schedule(machine: Host) -> None:
    vm = machine.vm
    timer = "trackerbackup@database.timer"
    write_unit_file(vm, TIMER_OVERRIDE, "[Timer]\nOnCalendar=\nOnCalendar=*-*-* 05:17:00\n")
    vm.exec("systemctl", "enable", "--now", timer)
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


def test_4_reinstalling_the_package_keeps_each_timer_enabled_or_disabled(
    machine: Host, deb: Path
) -> None:
    vm = machine.vm
    vm.exec("systemctl", "enable", "--now", "trackerbackup@database.timer")
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


# === 5. one run of a type at a time ========================================================


def test_5_a_second_start_while_the_unit_runs_is_merged_and_a_run_by_hand_gets_75(
    long_machine: Host,
) -> None:
    """What happens: `systemctl start` of an instance whose start job is still running
    does not queue a second run, systemd merges it into the running job (same
    InvocationID, one RUN_STARTED). `trackerbackup run database` by hand meanwhile
    exits 75 naming the unit's MainPID as the lock holder."""
    vm = long_machine.vm
    unit = "trackerbackup@database.service"
    before = cursor(vm)
    vm.exec("systemctl", "start", "--no-block", unit)
    pid = wait_until_running(long_machine, unit, "database")
    invocation = show(vm, unit, "InvocationID")["InvocationID"]

    vm.exec("systemctl", "start", "--no-block", unit)
    jobs = vm.exec("systemctl", "list-jobs", "--no-pager").stdout
    assert len([line for line in jobs.splitlines() if unit in line]) == 1, jobs
    by_hand = trackerbackup(vm, "run", "database")
    assert by_hand.returncode == 75, by_hand.stdout + by_hand.stderr
    assert f"another database backup is running (PID {pid})" in by_hand.stderr

    wait_until_inactive(vm, unit)
    entries = journal(vm, before, "-u", unit)
    assert {e["_PID"] for e in entries if "TRACKERBACKUP_EVENT" in e} == {str(pid)}
    assert show(vm, unit, "InvocationID")["InvocationID"] in ("", invocation)
    assert events(entries).count("RUN_STARTED") == 1
    assert events(entries).count("RUN_SUCCEEDED") == 1


def test_5_a_unit_started_while_a_run_by_hand_holds_the_lock_exits_75_as_a_success(
    long_machine: Host,
) -> None:
    """SuccessExitStatus=75: the unit logs LOCK_BUSY and ends successfully; no
    OnFailure= unit runs."""
    vm = long_machine.vm
    before = cursor(vm)
    by_hand = subprocess.Popen([DOCKER, "exec", vm.name, "trackerbackup", "run", "database"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lock = long_machine.stack.run_dir / "database.lock"
        deadline = time.monotonic() + 30
        while not (lock.exists() and lock.read_text().strip()):
            assert by_hand.poll() is None, "the run by hand ended early"
            assert time.monotonic() < deadline, "the run by hand never took the lock"
            time.sleep(0.05)
        run = start(vm, "trackerbackup@database.service")
        assert by_hand.poll() is None, "the run by hand ended before the unit's run"
    finally:
        out, err = by_hand.communicate(timeout=600)
    assert by_hand.returncode == 0, out + err

    assert run.returncode == 0, run.output
    assert run.succeeded, events(run.entries)
    busy = the(run.entries, Event.LOCK_BUSY)
    assert busy["TRACKERBACKUP_EXIT_CODE"] == "75"
    assert "another database backup is running" in busy["MESSAGE"]
    assert Event.RUN_STARTED.name not in events(run.entries)
    assert journal(vm, before, "-u", "trackerbackup-failure@database.service") == []


# === 6. systemctl stop during a run ========================================================


def test_6_stop_while_the_tracker_is_paused_aborts_cleanly_and_resumes_it(
    long_machine: Host,
) -> None:
    vm, stack = long_machine.vm, long_machine.stack
    unit = "trackerbackup@database.service"
    backups_before = {b["id"] for b in listed(vm, "database")}
    before = cursor(vm)
    stopper = vm.exec("sh", "-c", STOP_WHILE_PAUSED, unit, str(stack.run_dir),
                      stack.tracker_container, timeout=300)
    assert "is paused" in stopper.stdout

    assert show(vm, unit, "Result", "ExecMainStatus", "ActiveState") == {
        "Result": "exit-code", "ExecMainStatus": "1", "ActiveState": "failed"}
    assert container_state(stack.tracker_container) == "running"
    assert list((stack.run_dir / "frozen").glob("*.json")) == []
    entries = journal(vm, before, "-u", unit)
    assert "stopped by signal SIGTERM" in the(entries, Event.RUN_FAILED)["MESSAGE"]
    assert Event.CONTAINER_PAUSED.name in events(entries)
    assert Event.CONTAINER_RESUMED.name in events(entries)
    assert Event.RUN_SUCCEEDED.name not in events(entries)
    assert unit_failure_reported(vm, before, "database")["TRACKERBACKUP_TYPE"] == "database"
    assert {b["id"] for b in listed(vm, "database")} == backups_before

    vm.exec("systemctl", "reset-failed", unit)
    assert start(vm, unit).succeeded  # the next run
    assert partials(stack, "database") == []
    commits = stack.writer_status()["committed"]
    stack.wait_for_commits(commits + 20)  # the tracker writes again
    status = stack.stop_writer()
    assert status["failed"] == 0, status["errors"]
    assert_no_secret_in_journal(long_machine)


# === 7. remove and purge ===================================================================


def test_7_remove_keeps_the_config_the_backups_and_the_timer_enablement(machine: Host) -> None:
    vm, stack = machine.vm, machine.stack
    backups = sorted(p.name for p in (stack.backup_dir / "database").iterdir())
    assert backups
    vm.exec("apt-get", "remove", "-y", "trackerbackup", env=APT_ENV)
    status = vm.exec("dpkg-query", "-W", "-f=${Status}", "trackerbackup").stdout
    assert status == "deinstall ok config-files"
    assert vm.exec("test", "-x", "/usr/bin/trackerbackup", check=False).returncode != 0
    assert vm.exec("stat", "-c", "%a", CONFIG).stdout.strip() == "600"
    assert vm.exec("test", "-L", f"{WANTS}/trackerbackup@database.timer",
                   check=False).returncode == 0
    # prerm stopped the timer (enabled and active since step 4): none fires meanwhile.
    assert vm.exec("systemctl", "is-active", "trackerbackup@database.timer",
                   check=False).stdout.strip() == "inactive"
    assert sorted(p.name for p in (stack.backup_dir / "database").iterdir()) == backups
    vm.exec("test", "-d", "/var/backups/trackerbackup")


def test_7_purge_removes_config_and_enablement_but_never_backups(machine: Host) -> None:
    vm, stack = machine.vm, machine.stack
    backups = sorted(p.name for p in (stack.backup_dir / "database").iterdir())
    vm.exec("apt-get", "purge", "-y", "trackerbackup", env=APT_ENV)
    assert vm.exec("dpkg-query", "-W", "trackerbackup", check=False).returncode != 0
    assert vm.exec("test", "-e", "/etc/trackerbackup", check=False).returncode != 0
    links = vm.exec("ls", WANTS).stdout.split()
    assert not [name for name in links if name.startswith("trackerbackup")]
    assert sorted(p.name for p in (stack.backup_dir / "database").iterdir()) == backups
    vm.exec("test", "-d", "/var/backups/trackerbackup")
