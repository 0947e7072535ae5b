"""The installed package's runs: started with systemctl, read in the journal (issue 5).

The machine and its fixtures: package_vm.py and conftest.py; each test stands on them.
"""

from __future__ import annotations

import pytest

from tests.e2e.package_vm import (
    Host,
    assert_no_secret_in_journal,
    events,
    install_config,
    journal_text,
    listed,
    partials,
    show,
    start,
    the,
    unit_failure_reported,
)
from trackerbackup.backup_types import NAMES
from trackerbackup.log import Event

pytestmark = [pytest.mark.testbed, pytest.mark.vm]


# --- runs with systemctl ------------------------------------------------------------------


def test_selective_database_and_storage_runs_succeed_without_a_failed_tracker_write(
    configured: Host,
) -> None:
    """A oneshot instance that succeeded goes inactive and may be unloaded at once (then
    `systemctl show` reports defaults), so success is read where it is recorded: the
    exit status of `systemctl start` and systemd's "Deactivated successfully"."""
    vm, stack = configured.vm, configured.stack
    stack.wait_for_commits(stack.writer_status()["committed"] + 100)
    backup_ids = {}
    for backup_type in ("selective", "database", "storage"):
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
    stack.start_writer()  # the tracker keeps writing for the other tests

    for backup_type, backup_id in backup_ids.items():
        backups = {b["id"]: b for b in listed(vm, backup_type)}
        assert backups[backup_id]["verified"] is True
        assert backups[backup_id]["path"] == str(stack.backup_dir / backup_type / backup_id)


def test_an_unknown_type_fails_clearly_and_its_failure_unit_runs(configured: Host) -> None:
    """Exit 2 with "unknown backup type" and the valid types. That message is a usage
    error, which has no MESSAGE_ID (cli.py maps only ConfigError and LockBusy to events),
    so under `journalctl -x -u trackerbackup@bogus` the catalog texts are systemd's; the
    trackerbackup catalog text for the failure is UNIT_FAILED, which the OnFailure= unit
    logs, under `-u trackerbackup-failure@bogus`."""
    vm = configured.vm
    unit = "trackerbackup@bogus.service"
    run = start(vm, unit)
    assert run.returncode != 0
    assert run.failed_with == "exit-code"
    assert show(vm, unit, "Result", "ExecMainStatus") == {"Result": "exit-code",
                                                          "ExecMainStatus": "2"}
    text = journal_text(vm, run.entries[0], "-u", unit)
    assert "unknown backup type 'bogus'" in text
    assert f"hint: use one of: {', '.join(NAMES)}" in text
    assert "status=2/INVALIDARGUMENT" in text
    assert "Subject: Unit failed" in text  # systemd's catalog, shown by -x

    reported = unit_failure_reported(vm, run.since, "bogus")
    assert reported["TRACKERBACKUP_TYPE"] == "bogus"
    failure_text = journal_text(vm, reported, "-u", "trackerbackup-failure@bogus.service")
    assert "Subject: The unit trackerbackup@bogus.service failed" in failure_text
    assert "its OnFailure= unit ran" in failure_text
    vm.exec("systemctl", "reset-failed", unit)


# --- the journal --------------------------------------------------------------------------


def test_a_database_run_logs_structured_fields_with_fixed_message_ids(configured: Host) -> None:
    vm = configured.vm
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


def test_a_failed_run_shows_the_catalog_text_and_its_failure_unit_runs(
    configured: Host,
) -> None:
    """Forced failure: sqlite.host_path names the tracker's config file, not a database."""
    vm, stack = configured.vm, configured.stack
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

    text = journal_text(vm, run.entries[0], "-u", run.unit)
    assert "Subject: Backup of type database failed" in text
    assert "Nothing of this\nrun was recorded as a backup" in text.replace("░░ ", "")
    assert unit_failure_reported(vm, run.since, "database")["TRACKERBACKUP_TYPE"] == "database"
    assert {b["id"] for b in listed(vm, "database")} == before
    assert partials(stack, "database") == []
    vm.exec("systemctl", "reset-failed", run.unit)
    assert start(vm, run.unit).succeeded  # fixed config: the next run works again


def test_no_secret_of_the_stack_appears_in_the_journal(backed_up: Host) -> None:
    assert_no_secret_in_journal(backed_up)
