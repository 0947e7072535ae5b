"""Runs at the same time: the same type twice, different types at once, a stale lock."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults import kit
from tests.faults.report import Results

pytestmark = pytest.mark.testbed

SAME = "concurrency: the same type twice"
SAME_TEXT = ("A second run of the type once the first logs that it started: it must exit 75 "
             "naming the holder's PID (or 0 if the first had finished); with `--wait` it "
             "must wait and succeed. The first must succeed.")
OTHERS = "concurrency: different types at once"
OTHERS_TEXT = "Every available type started at the same moment: each must succeed."
STALE = "concurrency: a stale lock"
STALE_TEXT = ("A run SIGKILLed while it holds its lock (and a lock file naming a dead PID): "
              "the next run must not wait or exit 75.")


def logged(log: Path, text: str) -> Callable[[], bool]:
    return lambda: log.exists() and text in log.read_text(errors="replace")


@pytest.mark.parametrize("scenario", kit.SCENARIOS, ids=lambda s: s.name)
def test_same_type_twice(fault_stack: Callable[[kit.TypeScenario], kit.Cli],
                         scenario: kit.TypeScenario, mode: kit.Mode, results: Results,
                         tmp_path: Path) -> None:
    cli = fault_stack(scenario)
    cli.ok("run", scenario.backup_type)
    for number, wait in enumerate(mode.variants(f"same-{scenario.name}", [False, True])):
        log = tmp_path / f"first-{number}.log"
        with kit.trial(results, SAME, SAME_TEXT, cli, scenario,
                       "--wait" if wait else "no --wait") as current:
            checks = kit.Checks(cli, scenario)
            checks.snapshot()
            first = cli.start("run", scenario.backup_type, log=log)
            kit.wait_for(logged(log, "backup started"), first)
            second = cli("run", scenario.backup_type, *(["--wait"] if wait else []))
            first.wait(timeout=120)
            cli.seen(log.read_text(errors="replace"), "first run")
            current.hit = second.returncode == 75 or (wait and first.returncode == 0)
            if first.returncode != 0:
                raise kit.TrialFailed(f"the first run exited {first.returncode}")
            expected = (0,) if wait else (0, 75)
            checks.clean_failure(second, expected)
            if second.returncode == 75 and f"(PID {first.pid})" not in second.stderr:
                raise kit.TrialFailed(f"exit 75 without the holder's PID:\n{second.stderr}")
            checks.before = cli.listed(scenario.backup_type)  # two runs: both may prune
            checks.recover_leaves_tracker_running(True, None)
            checks.everything_listed_verifies()
            checks.next_run_succeeds_and_cleans_up()
            current.checks = ["both succeed" if wait else "second exits 75 naming the PID",
                              *checks.done]
    kit.assert_no_failures(results, SAME, scenario)


def test_different_types_at_once(fault_stack: Callable[[kit.TypeScenario], kit.Cli],
                                 mode: kit.Mode, results: Results, tmp_path: Path) -> None:
    scenarios = kit.SCENARIOS
    cli = fault_stack(scenarios[0])
    for other in scenarios[1:]:  # one config with every scenario's type (first table wins)
        if f"[{other.backup_type}]" not in cli.stack.config_path.read_text():
            cli.stack.config_path.write_text(cli.stack.config_path.read_text()
                                             + other.config_text())
    types = sorted({s.backup_type for s in scenarios})
    for number in range(mode.repeats):
        with kit.trial(results, OTHERS, OTHERS_TEXT, cli, scenarios[0]) as current:
            procs = {t: cli.start("run", t, log=tmp_path / f"{t}-{number}.log") for t in types}
            codes = {t: p.wait(timeout=120) for t, p in procs.items()}
            for t in types:
                cli.seen((tmp_path / f"{t}-{number}.log").read_text(errors="replace"), t)
            current.hit = len(types) > 1
            if set(codes.values()) != {0}:
                raise kit.TrialFailed(f"exit codes of simultaneous runs: {codes}")
            for scenario in scenarios:
                checks = kit.Checks(cli, scenario)
                checks.snapshot()
                checks.everything_listed_verifies()
                checks.recover_leaves_tracker_running(True, None)
            current.checks = [f"{' + '.join(types)} all exit 0", *checks.done]
    kit.assert_no_failures(results, OTHERS, scenarios[0])


@pytest.mark.parametrize("scenario", kit.SCENARIOS, ids=lambda s: s.name)
def test_stale_lock(fault_stack: Callable[[kit.TypeScenario], kit.Cli],
                    scenario: kit.TypeScenario, mode: kit.Mode, results: Results,
                    tmp_path: Path) -> None:
    cli = fault_stack(scenario)
    cli.ok("run", scenario.backup_type)
    lock = cli.stack.run_dir / f"{scenario.backup_type}.lock"
    for number in range(mode.repeats):
        with kit.trial(results, STALE, STALE_TEXT, cli, scenario) as current:
            checks = kit.Checks(cli, scenario)
            checks.snapshot()
            log = tmp_path / f"killed-{number}.log"
            proc = cli.start("run", scenario.backup_type, log=log)
            current.hit = kit.wait_for(logged(log, "backup started"), proc) and kit.kill_group(proc)
            result = cli("run", scenario.backup_type)
            checks.clean_failure(result, (0,))
            lock.write_text("4194303\n")  # a PID that cannot exist (above pid_max's default)
            result = cli("run", scenario.backup_type)
            checks.clean_failure(result, (0,))
            checks.before = cli.listed(scenario.backup_type)
            checks.after_fault()
            current.checks = ["killed holder: next run exit 0", "dead PID in the lock file: "
                              "exit 0", *checks.done[1:]]
    kit.assert_no_failures(results, STALE, scenario)
