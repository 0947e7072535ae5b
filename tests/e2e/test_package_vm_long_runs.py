"""Runs of the installed package that last (a 2,000,000-row database, the tracker paused
for every copy): one run of a type at a time, and `systemctl stop` in the middle of one.

The machine and its fixtures: package_vm.py and conftest.py; each test stands on them.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.e2e.package_vm import (
    HeldCommand,
    Host,
    JournalFollower,
    assert_no_secret_in_journal,
    cursor,
    events,
    journal,
    listed,
    lock_holder,
    partials,
    show,
    start,
    the,
    unit_failure_reported,
    wait_until_inactive,
    wait_until_running,
    write_unit_file,
)
from tests.kit.filesystems import skip_where_copies_are_clones
from tests.kit.wait import wait_until
from tests.testbed.engine import DOCKER, container_state
from trackerbackup.log import Event

pytestmark = [pytest.mark.testbed, pytest.mark.vm]

CPU_CAP_DROP_IN = "/etc/systemd/system/trackerbackup@database.service.d/cpu-cap.conf"


def test_a_second_start_while_the_unit_runs_is_merged_and_a_run_by_hand_gets_75(
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
    by_hand = vm.trackerbackup("run", "database")
    assert by_hand.returncode == 75, by_hand.stdout + by_hand.stderr
    assert f"another database backup is running (PID {pid})" in by_hand.stderr

    wait_until_inactive(vm, unit)
    logged = [e for e in journal(vm, before, "-u", unit) if "TRACKERBACKUP_EVENT" in e]
    assert {(e["_PID"], e["_SYSTEMD_INVOCATION_ID"]) for e in logged} == {(str(pid),
                                                                          invocation)}
    assert events(logged).count("RUN_STARTED") == 1
    assert events(logged).count("RUN_SUCCEEDED") == 1


def test_a_unit_started_while_a_run_by_hand_holds_the_lock_exits_75_as_a_success(
    long_machine: Host,
) -> None:
    """SuccessExitStatus=75: the unit logs LOCK_BUSY and ends successfully; no
    OnFailure= unit runs."""
    vm = long_machine.vm
    before = cursor(vm)
    by_hand = subprocess.Popen([DOCKER, "exec", vm.name, "trackerbackup", "run", "database"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:

        def holds_the_lock() -> int | None:
            assert by_hand.poll() is None, "the run by hand ended early"
            return lock_holder(long_machine.stack, "database")

        wait_until(holds_the_lock, 30, what="the run by hand holding the lock")
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


def test_stop_while_the_tracker_is_paused_aborts_cleanly_and_resumes_it(
    long_machine: Host,
) -> None:
    """`systemctl stop` lands in the copy the tracker is paused for: the stop is started
    ahead and released the moment the run logs the pause, and the run's CPU is capped
    for the test so that the copy (a tenth of a second at full speed) lasts a second."""
    vm, stack = long_machine.vm, long_machine.stack
    skip_where_copies_are_clones(stack.root)
    unit = "trackerbackup@database.service"
    backups_before = {b["id"] for b in listed(vm, "database")}
    write_unit_file(vm, CPU_CAP_DROP_IN, "[Service]\nCPUQuota=10%\n")
    before = cursor(vm)
    paused = JournalFollower(vm, before, f"MESSAGE_ID={Event.CONTAINER_PAUSED.value}")
    stop = HeldCommand(vm, "systemctl", "stop", unit)
    try:
        vm.exec("systemctl", "start", "--no-block", unit)
        paused.next_entry(timeout=120)  # the tracker is paused, the copy runs
        stop.go()
    finally:
        paused.close()
        stop.close()
        vm.exec("rm", CPU_CAP_DROP_IN)
        vm.exec("systemctl", "daemon-reload")

    assert show(vm, unit, "Result", "ExecMainStatus", "ActiveState") == {
        "Result": "exit-code", "ExecMainStatus": "1", "ActiveState": "failed"}
    assert container_state(stack.tracker_container) == "running"
    assert list((stack.run_dir / "frozen").glob("*.json")) == []
    entries = [e for e in journal(vm, before, "-u", unit) if e.get("_SYSTEMD_UNIT") == unit]
    assert events(entries) == ["RUN_STARTED", "CONTAINER_PAUSED", "CONTAINER_RESUMED",
                               "RUN_FAILED"]
    assert "stopped by signal SIGTERM" in the(entries, Event.RUN_FAILED)["MESSAGE"]
    assert unit_failure_reported(vm, before, "database")["TRACKERBACKUP_TYPE"] == "database"
    assert {b["id"] for b in listed(vm, "database")} == backups_before

    vm.exec("systemctl", "reset-failed", unit)
    assert start(vm, unit).succeeded  # the next run
    assert partials(stack, "database") == []
    stack.wait_for_commits(stack.writer_status()["committed"] + 20)  # the tracker writes
    status = stack.stop_writer()
    assert status["failed"] == 0, status["errors"]
    stack.start_writer()
    assert_no_secret_in_journal(long_machine)
