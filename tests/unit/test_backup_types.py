"""Every list of backup types in the tree is the registry's (`backup_types.TYPES`)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from trackerbackup import backup_types
from trackerbackup.backup_types import NAMES, TYPES, UNIT_INSTANCES, VERIFY_JOB
from trackerbackup.sources.registry import SOURCES

ROOT = Path(__file__).parents[2]


def test_sources_exist_for_exactly_the_available_types() -> None:
    assert set(SOURCES) == {t.name for t in TYPES if t.available}


def test_bash_completion_offers_every_type() -> None:
    script = (ROOT / "debian/completions/trackerbackup").read_text()
    [types] = re.findall(r'^\s*local types="([^"]*)"$', script, re.M)
    assert tuple(types.split()) == NAMES


def test_each_type_and_the_verify_job_and_nothing_else_has_a_default_schedule() -> None:
    assert (*NAMES, VERIFY_JOB) == UNIT_INSTANCES
    dropins = {p.name for p in (ROOT / "systemd").glob("trackerbackup@*.timer.d")}
    assert dropins == {f"trackerbackup@{name}.timer.d" for name in UNIT_INSTANCES}
    for name in UNIT_INSTANCES:
        schedule = ROOT / f"systemd/trackerbackup@{name}.timer.d/10-schedule.conf"
        assert re.search(r"^OnCalendar=\S", schedule.read_text(), re.M), name


def test_units_lists_every_timer_then_every_service_for_debian_rules() -> None:
    result = subprocess.run([sys.executable, "-m", "trackerbackup.backup_types", "units"],
                            capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout == " ".join(
        [f"trackerbackup@{n}.timer" for n in UNIT_INSTANCES]
        + [f"trackerbackup@{n}.service" for n in UNIT_INSTANCES])
    assert "trackerbackup@verify.service" in result.stdout.split()


def test_units_refuses_anything_else() -> None:
    assert backup_types.main([]) == 2
    assert backup_types.main(["types", "extra"]) == 2


def test_prerm_takes_its_units_from_the_registry_not_a_copy() -> None:
    prerm = (ROOT / "debian/trackerbackup.prerm").read_text()
    assert "deb-systemd-invoke stop #BACKUP_UNITS#" in prerm
    assert not re.search(r"trackerbackup@\w", prerm)
    rules = (ROOT / "debian/rules").read_text()
    assert "python3 -m trackerbackup.backup_types units >debian/backup-units" in rules
    assert "--define BACKUP_UNITS=@debian/backup-units" in rules
