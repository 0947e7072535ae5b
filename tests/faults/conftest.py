"""Fixtures of the fault suite: the mode, the secrets watch, the results, one stack per test
(the test bed's fixtures are imported here: only the top-level conftest may register
plugins, and the test bed is registered only by the tiers that use it).

`TRACKERBACKUP_FAULTS=long` (what `nox -s faults -- long` sets) runs the long mode and
writes docs/reliability.md at the end; the default short mode is what CI runs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults import kit
from tests.faults.report import Results, render
from tests.faults.secrets_watch import SecretsWatch
from tests.kit.cli import ROOT
from tests.testbed.fixtures import *  # noqa: F403
from tests.testbed.stack import Stack

REPORT_VAR = "TRACKERBACKUP_FAULTS_REPORT"  # where to write the report (long mode: docs/)
MODE = kit.MODE
RESULTS = Results()
WATCH = SecretsWatch()


@pytest.fixture(scope="session")
def mode() -> kit.Mode:
    return MODE


@pytest.fixture(scope="session")
def results() -> Results:
    return RESULTS


@pytest.fixture(scope="session")
def watch() -> Iterator[SecretsWatch]:
    WATCH.start()
    yield WATCH
    WATCH.stop()


@pytest.fixture(autouse=True)
def _no_secret_shows(watch: SecretsWatch) -> Iterator[None]:
    seen = len(watch.hits)
    yield
    watch.scan_processes()
    assert watch.hits[seen:] == [], "a secret of the test bed showed"


@pytest.fixture
def fault_stack(stack_factory: Callable[..., Stack],
                watch: SecretsWatch) -> Callable[[kit.TypeScenario], kit.Cli]:
    """`fault_stack(scenario)`: a started stack configured for the scenario, and its CLI."""

    def make(scenario: kit.TypeScenario) -> kit.Cli:
        stack = stack_factory(flavour=scenario.flavour, rows=scenario.rows)
        watch.add(**dataclasses.asdict(stack.secrets))
        stack.config_path.write_text(stack.config_path.read_text() + scenario.config_text())
        return kit.Cli(stack, watch)

    return make


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """The tests' own output (captured, and the failure text) is scanned too."""
    for name, text in report.sections:
        WATCH.scan_text(text, f"{report.nodeid} ({name})")
    if report.longreprtext:
        WATCH.scan_text(report.longreprtext, f"{report.nodeid} (report)")


def pytest_sessionfinish(session: pytest.Session, exitstatus: Any) -> None:
    target = os.environ.get(REPORT_VAR) or (
        str(ROOT / "docs/reliability.md") if MODE.name == "long" else "")
    if not target or not RESULTS.faults:
        return
    text = render(RESULTS, mode=MODE.name, seed=kit.SEED, counts=MODE.describe(),
                  unavailable=kit.UNAVAILABLE, secrets_line=secrets_line(), root=ROOT)
    WATCH.scan_text(text, "docs/reliability.md")
    Path(target).write_text(text)


def secrets_line() -> str:
    if WATCH.hits:
        return "**found**: " + "; ".join(WATCH.hits)
    return (f"none of the {len(WATCH.secrets)} test bed secrets was found in "
            f"{WATCH.scans:,} scans of every process's /proc/PID/cmdline or in "
            f"{WATCH.texts:,} texts: trackerbackup's console log, the tests' reports, and "
            f"every field of the {WATCH.journal_entries:,} journal entries sent to the "
            "suite's journald socket (tests/faults/test_journal.py).")
