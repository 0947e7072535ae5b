"""The operator's machine for the package tests: a test bed stack and a sandboxing VM on it,
and what an operator does there (configure, systemctl, journalctl).

The VM gets CAP_SYS_ADMIN (`VM(sandbox=True)`), so systemd really builds the unit's mount
namespace: ProtectSystem=strict, ReadWritePaths= and PrivateTmp= are enforced, as on a
real host (without it systemd in a container skips them silently). So the stacks live
under /srv/trackerbackup-testbed, not /tmp: PrivateTmp= would hide them from the unit.
The fixtures that put a machine in the state a test needs are in conftest.py.
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

from tests.kit.wait import wait_until
from tests.testbed.engine import DOCKER
from tests.testbed.images import Images
from tests.testbed.stack import Stack
from tests.testbed.vm import VM
from trackerbackup.log import Event

# Not under /tmp or /var/tmp: the unit's PrivateTmp= would hide the stack from it.
STACKS_DIR = Path("/srv/trackerbackup-testbed")
CONFIG = "/etc/trackerbackup/trackerbackup.toml"
# What `systemctl edit trackerbackup@.service` writes; trackerbackup(8), "Sandbox".
SERVICE_DROP_IN = "/etc/systemd/system/trackerbackup@.service.d/testbed.conf"
TIMER_OVERRIDE = "/etc/systemd/system/trackerbackup@database.timer.d/override.conf"
WANTS = "/etc/systemd/system/timers.target.wants"
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}
INSTALLED = "install ok installed"
# systemd's own catalogued messages (systemd/sd-messages.h).
SYSTEMD_UNIT_SUCCESS = "7ad2d189f7e94e70a38c781354912448"  # "Deactivated successfully."
SYSTEMD_UNIT_FAILED = "d9b373ed55a64feb8242e02dbe79a49c"  # "Failed with result '...'"
JOURNAL_FOLLOW_LIMIT_S = 600


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


# --- the package and its configuration ----------------------------------------------------


def package_status(vm: VM) -> str | None:
    """dpkg's status of the package ("install ok installed", "deinstall ok config-files"),
    None if dpkg knows nothing of it."""
    query = vm.exec("dpkg-query", "-W", "-f=${Status}", "trackerbackup", check=False)
    return query.stdout if query.returncode == 0 else None


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


def move_database_schedule(vm: VM, hour: int, minute: int) -> None:
    """`systemctl edit trackerbackup@database.timer`: OnCalendar= at HH:MM, then enable it."""
    write_unit_file(vm, TIMER_OVERRIDE,
                    f"[Timer]\nOnCalendar=\nOnCalendar=*-*-* {hour:02}:{minute:02}:00\n")
    vm.exec("systemctl", "enable", "--now", "trackerbackup@database.timer")


def listed(vm: VM, backup_type: str) -> list[dict[str, Any]]:
    result = vm.trackerbackup("list", backup_type, "--json")
    assert result.returncode == 0, result.stderr
    backups: list[dict[str, Any]] = json.loads(result.stdout)
    return backups


def partials(stack: Stack, backup_type: str) -> list[str]:
    directory = stack.backup_dir / backup_type
    return sorted(p.name for p in directory.glob(".partial-*")) if directory.is_dir() else []


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
    entries: list[dict[str, Any]] = wait_until(lambda: journal(vm, after, *matches), timeout,
                                               interval=0.3, what=f"journal entry {matches}")
    return entries[0]


def unit_failure_reported(vm: VM, after: str, backup_type: str) -> dict[str, Any]:
    """The UNIT_FAILED entry of trackerbackup-failure@TYPE (OnFailure=), after `after`."""
    return wait_for_entry(vm, after, f"_SYSTEMD_UNIT=trackerbackup-failure@{backup_type}.service",
                          f"MESSAGE_ID={Event.UNIT_FAILED.value}")


def assert_no_secret_in_journal(machine: Host) -> None:
    dump = machine.vm.exec("journalctl", "-o", "json", "--no-pager").stdout
    assert Event.RUN_SUCCEEDED.value in dump  # the whole journal, trackerbackup's runs too
    for secret in astuple(machine.stack.secrets):
        assert secret not in dump


class JournalFollower:
    """`journalctl --follow` in the VM, from the cursor `after` on: `next_entry()` returns
    each entry with every FIELD=value of `matches` as soon as it is written.

    For acting at a moment a run logs, which polling `journalctl` (a tenth of a second a
    call) could miss."""

    def __init__(self, vm: VM, after: str, *matches: str) -> None:
        self._after = after
        self._entries: queue.Queue[dict[str, Any]] = queue.Queue()
        self._process = subprocess.Popen(
            [DOCKER, "exec", vm.name, "timeout", str(JOURNAL_FOLLOW_LIMIT_S), "journalctl",
             "--follow", f"--cursor={after}", "-o", "json", *matches],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            entry = json.loads(line) if line.startswith("{") else None
            if entry is not None and entry["__CURSOR"] != self._after:
                self._entries.put(entry)

    def next_entry(self, timeout: float) -> dict[str, Any]:
        try:
            return self._entries.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no journal entry within {timeout:g} s") from None

    def close(self) -> None:
        self._process.kill()
        self._process.wait()


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


def lock_holder(stack: Stack, backup_type: str) -> int | None:
    """The PID in the type's lock file, None while no run holds it."""
    lock = stack.run_dir / f"{backup_type}.lock"
    text = lock.read_text().strip() if lock.exists() else ""
    return int(text) if text else None


def wait_until_running(machine: Host, unit: str, backup_type: str) -> int:
    """Wait until UNIT's run holds the type's lock; return its PID (the unit's MainPID)."""
    pid = wait_until(lambda: lock_holder(machine.stack, backup_type), 30,
                     what=f"{unit} holding the {backup_type} lock")
    assert show(machine.vm, unit, "MainPID")["MainPID"] == str(pid)
    return pid


def wait_until_inactive(vm: VM, unit: str, timeout: float = 300) -> None:
    def inactive() -> bool:
        state = show(vm, unit, "ActiveState")["ActiveState"]
        return state not in ("activating", "active", "deactivating")

    wait_until(inactive, timeout, interval=0.3, what=f"{unit} inactive")


class HeldCommand:
    """A command in the VM, started now (`docker exec` takes a tenth of a second to start)
    but run only at `go()`, within milliseconds; never run if `close()` comes first."""

    def __init__(self, vm: VM, *argv: str) -> None:
        self.argv = argv
        self._process = subprocess.Popen(
            [DOCKER, "exec", "-i", vm.name, "sh", "-c", 'read -r go && exec "$0" "$@"', *argv],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.went = False

    def go(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write("go\n")
        self._process.stdin.flush()
        self.went = True

    def close(self, timeout: float = 300) -> str:
        """Its output, once it has ended (without `go()`, its stdin closes unread: it ends
        without running)."""
        out, _ = self._process.communicate(timeout=timeout)
        if self.went:
            assert self._process.returncode == 0, f"{' '.join(self.argv)}: {out}"
        return out
