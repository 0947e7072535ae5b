"""The end-to-end tier: the Docker test bed's fixtures, for this tier only, and the
operator's machines of the package tests.

pytest takes `pytest_plugins` only from the top-level conftest, so the test bed's fixtures
(engine, images, stacks, VM) and its summary line are imported here.

Each package test stands on fixtures that put a machine in the state it needs (package
installed, configured, backed up, removed), whatever the tests before it did, so any one
can run alone (`pytest -k`).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.package_vm import (
    APT_ENV,
    INSTALLED,
    Host,
    configure,
    host,
    package_status,
    start,
)
from tests.kit.cli import ROOT
from tests.testbed.fixtures import *  # noqa: F403
from tests.testbed.images import Images

# The long runs: the tracker is paused for every copy (budget 0 s), and quick_check keeps
# each run around ten seconds.
LONG_RUN_CONFIG = """
[sqlite]
max_writer_stall = 0.0
over_budget = "pause"
integrity_check = "quick"
"""


@pytest.fixture(scope="session")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The .deb under test: built once per session from this checkout with
    debian/build-deb.sh, or taken from $TRACKERBACKUP_DEB (an artifact built elsewhere)."""
    given = os.environ.get("TRACKERBACKUP_DEB")
    if given:
        return Path(given).resolve()
    out = tmp_path_factory.mktemp("deb")
    built = subprocess.run(["bash", str(ROOT / "debian/build-deb.sh"), str(out)],
                           capture_output=True, text=True, check=False, timeout=600)
    assert built.returncode == 0, built.stderr
    return Path(built.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="package")
def machine(images: Images) -> Iterator[Host]:
    """The operator's machine: a small SQLite stack (2,000 torrents, writer running) and
    the VM on it, shared by the package tests; the package's state is the fixtures' below."""
    with host(images, flavour="sqlite") as machine:
        yield machine


@pytest.fixture
def fresh_install(machine: Host, deb: Path) -> Host:
    """A first installation: what earlier tests left (the package, the operator's drop-ins)
    purged, then `apt-get install ./trackerbackup_*.deb`, offline."""
    vm = machine.vm
    if package_status(vm) is not None:
        vm.exec("apt-get", "purge", "-y", "trackerbackup", env=APT_ENV)
    vm.exec("sh", "-c", "rm -rf /etc/systemd/system/trackerbackup*")
    vm.exec("systemctl", "daemon-reload")
    vm.install_deb(deb)
    return machine


@pytest.fixture
def installed(machine: Host, deb: Path) -> Host:
    """The package installed (apt-get, offline), unless it already is."""
    if package_status(machine.vm) != INSTALLED:
        machine.vm.install_deb(deb)
    return machine


@pytest.fixture
def configured(installed: Host) -> Host:
    """trackerbackup(8)'s setup: the configuration points at the stack, the drop-in grants
    its directories to the unit's sandbox; no unit left failed."""
    configure(installed)
    installed.vm.exec("systemctl", "reset-failed")
    return installed


@pytest.fixture
def backed_up(configured: Host) -> Host:
    """A successful run of each type, started with systemctl."""
    for backup_type in ("selective", "database"):
        run = start(configured.vm, f"trackerbackup@{backup_type}.service")
        assert run.succeeded, run.output
    return configured


@pytest.fixture
def removed(backed_up: Host) -> Host:
    """Backed up, the database timer enabled, then the package removed (not purged)."""
    backed_up.vm.exec("systemctl", "enable", "trackerbackup@database.timer")
    backed_up.vm.exec("apt-get", "remove", "-y", "trackerbackup", env=APT_ENV)
    return backed_up


@pytest.fixture(scope="module")
def long_machine(images: Images, deb: Path) -> Iterator[Host]:
    """Runs that last: a 2,000,000-row database (213 MB), the package installed and
    configured to pause the tracker for every copy."""
    with host(images, flavour="sqlite", rows=2_000_000) as machine:
        machine.vm.install_deb(deb)
        configure(machine, LONG_RUN_CONFIG)
        yield machine
