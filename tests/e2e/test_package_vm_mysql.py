"""The installed package on a MySQL-flavoured host: `systemctl start trackerbackup@database`
dumps the MariaDB stand-in through `docker exec` from inside the unit's sandbox.

The machine: package_vm.py (a VM with systemd, the package installed offline, the stack's
configuration with `tracker.driver = "mysql"`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.package_vm import (
    Host,
    assert_no_secret_in_journal,
    configure,
    events,
    host,
    listed,
    show,
    start,
    the,
)
from tests.testbed.images import Images
from trackerbackup.log import Event

pytestmark = [pytest.mark.testbed, pytest.mark.vm]


@pytest.fixture(scope="module")
def mysql_machine(images: Images, deb: Path) -> Iterator[Host]:
    """A MariaDB stack (writer running), the package installed and configured for it."""
    with host(images, flavour="mysql") as machine:
        machine.vm.install_deb(deb)
        configure(machine)
        yield machine


def test_the_database_unit_dumps_mysql_verifies_and_keeps_the_password_out_of_the_journal(
    mysql_machine: Host,
) -> None:
    vm, stack = mysql_machine.vm, mysql_machine.stack
    stack.wait_for_commits(stack.writer_status()["committed"] + 100)

    run = start(vm, "trackerbackup@database.service")

    assert run.returncode == 0, run.output
    assert run.succeeded, events(run.entries)
    assert show(vm, "trackerbackup@database.service", "Result")["Result"] == "success"
    succeeded = the(run.entries, Event.RUN_SUCCEEDED)
    snapshot = the(run.entries, Event.SNAPSHOT_TAKEN)
    assert snapshot["TRACKERBACKUP_STRATEGY"] == "mysql-dump"
    [backup] = [b for b in listed(vm, "database") if b["id"] == succeeded["TRACKERBACKUP_ID"]]
    assert backup["verified"] is True
    verified = vm.trackerbackup("verify", "database", "--id", backup["id"])
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "row counts of 5 tables match the manifest" in verified.stdout
    status = stack.stop_writer()
    assert status["failed"] == 0, status["errors"]
    assert_no_secret_in_journal(mysql_machine)
