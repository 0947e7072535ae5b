"""Every field trackerbackup sends to the journal, on success and on failure, is scanned for
the test bed's secrets and for secrets of trackerbackup's own config (a MySQL password,
ping URL tokens), which the failing runs below put in the way of every error message."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults import kit
from tests.faults.journal_capture import JournalCapture
from tests.faults.report import Results
from tests.faults.secrets_watch import SecretsWatch
from tests.faults.test_environment import docker_wrapper
from tests.kit.cli import ROOT, environment

pytestmark = pytest.mark.testbed

JOURNAL = "secrets in the journal"
JOURNAL_TEXT = ("Each available type's run, `verify --all`, `list`, `check` and failing runs "
                "(the Docker engine gone; with MySQL a wrong password and a missing "
                "database in trackerbackup's config; ping URLs with a token that cannot "
                "be reached) log to a journald socket of the suite's own (native protocol, "
                "in a private mount namespace). Every field of every entry must be free of "
                "the test bed's secrets and of the config's password and ping tokens.")
FLAVOURS = ("sqlite", "mysql")


@pytest.fixture
def capture(watch: SecretsWatch) -> Iterator[JournalCapture]:
    with JournalCapture(watch) as journal:
        yield journal


def run(cli: kit.Cli, journal: JournalCapture, *args: str,
        config: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(journal.wrap(cli.argv(*args, config=config)), cwd=ROOT,
                            capture_output=True, text=True, check=False, timeout=300,
                            env=environment())
    cli.seen(result.stdout + result.stderr, f"trackerbackup {' '.join(args)} (journal)")
    if "Traceback" in result.stdout + result.stderr:
        raise kit.TrialFailed(f"a traceback:\n{result.stderr[-3000:]}")
    return result


def with_secret_settings(cli: kit.Cli, watch: SecretsWatch, directory: Path,
                         flavour: str) -> Path:
    """The stack's config plus ping URLs with tokens (nothing listens there) and, with
    MySQL, a wrong password for a user and a database that do not exist."""
    token, password = secrets.token_hex(12), secrets.token_hex(12)
    watch.add(ping_token=token, config_password=password)
    text = cli.stack.config_path.read_text()
    text += (f'\n[monitoring]\nping_start = "http://127.0.0.1:9/ping/{token}/start"\n'
             f'ping_failure = "http://127.0.0.1:9/ping/{token}/fail"\n')
    if flavour == "mysql":
        text += (f'\n[mysql]\nuser = "nobody_{token[:6]}"\npassword = "{password}"\n'
                 'database = "no_such_database"\n')
    directory.mkdir(mode=0o700, exist_ok=True)
    config = directory / "trackerbackup.toml"
    config.write_text(text)
    config.chmod(0o600)
    return config


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_no_secret_in_any_journal_field(fault_stack: Callable[[kit.TypeScenario], kit.Cli],
                                        capture: JournalCapture, watch: SecretsWatch,
                                        results: Results, flavour: str,
                                        tmp_path: Path) -> None:
    scenarios = [s for s in kit.SCENARIOS if s.flavour == flavour]
    if not scenarios:
        pytest.skip(f"no {flavour} scenario in this mode")
    cli = fault_stack(scenarios[0])
    for other in scenarios[1:]:
        if f"[{other.backup_type}]" not in cli.stack.config_path.read_text():
            cli.stack.config_path.write_text(cli.stack.config_path.read_text()
                                             + other.config_text())
    types = sorted({s.backup_type for s in scenarios})
    scenario = kit.TypeScenario(f"{flavour} stack", types[0], flavour=scenarios[0].flavour)
    with kit.trial(results, JOURNAL, JOURNAL_TEXT, cli, scenario) as current:
        for backup_type in types:
            expect(run(cli, capture, "run", backup_type), (0,), "run", backup_type)
            expect(run(cli, capture, "verify", backup_type, "--all"), (0,), "verify")
        expect(run(cli, capture, "list"), (0,), "list")
        run(cli, capture, "check")
        failing = with_secret_settings(cli, watch, tmp_path / "secret", flavour)
        for backup_type in types:
            expect(run(cli, capture, "run", backup_type, config=failing),
                   (1, 3) if flavour == "mysql" else (0, 1, 3), "run with secrets", backup_type)
        gone, _ = docker_wrapper(cli, tmp_path / "gone", 0)
        expect(run(cli, capture, "run", types[0], config=gone), (0, 3), "engine gone")
        received(capture)
        current.hit = True
        current.checks = [f"{len(capture.entries)} journal entries, every field scanned",
                          "runs, verify, list, check and failing runs"]
    kit.assert_no_failures(results, JOURNAL, scenario)


def expect(result: subprocess.CompletedProcess[str], codes: tuple[int, ...],
           *what: str) -> None:
    if result.returncode not in codes:
        raise kit.TrialFailed(f"{' '.join(what)}: exit {result.returncode}, expected "
                              f"{codes}:\n{result.stderr[-2000:]}")


def received(capture: JournalCapture) -> None:
    """The capture saw what a journal would: events with their ids and structured fields."""
    ids = {e.get("MESSAGE_ID") for e in capture.entries} - {None}
    if len(ids) < 3 or not any("TRACKERBACKUP_TYPE" in e for e in capture.entries):
        raise kit.TrialFailed(f"the journal capture received too little: {len(capture.entries)} "
                              f"entries, MESSAGE_IDs {sorted(map(repr, ids))}")
