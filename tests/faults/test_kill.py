"""SIGKILL of a run (its whole process group, as systemd kills a unit) at random points and
at milestones read from its console log or seen in the repository."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.faults import kit
from tests.faults.report import Results

pytestmark = pytest.mark.testbed

RANDOM = "SIGKILL at a random point"
RANDOM_TEXT = ("The run's process group gets SIGKILL after a delay drawn uniformly over "
               "1.1 times the measured duration of a normal run of the type.")
MILESTONE = "SIGKILL at a milestone"
MILESTONE_TEXT = ("SIGKILL as soon as the run reaches a milestone: its console log says the "
                  "backup started / the tracker is paused or stopped / the snapshot is taken, "
                  "or its `.partial-*` directory, a file in it, the committed backup or a "
                  "`.deleting-*` directory (pruning) appears. *hit* counts the milestones "
                  "reached before the run ended; the scenario's notes list those never reached.")


Milestones = dict[str, Callable[[], bool]]


def milestones(cli: kit.Cli, scenario: kit.TypeScenario, log: Path) -> Milestones:
    type_dir = cli.stack.backup_dir / scenario.backup_type
    before = {p.name for p in type_dir.iterdir()} if type_dir.is_dir() else set()

    def logged(text: str) -> Callable[[], bool]:
        return lambda: text in log.read_text(errors="replace")

    def entry(check: Callable[[str], bool]) -> Callable[[], bool]:
        return lambda: any(check(p.name) for p in type_dir.iterdir() if p.name not in before)

    def partial_file() -> bool:
        return any(any(d.iterdir()) for d in type_dir.glob(".partial-*"))

    return {
        "started": logged("backup started"),
        "frozen": lambda: "paused container" in (text := log.read_text(errors="replace"))
        or "stopped container" in text,
        "snapshot taken": logged("snapshot of"),
        "partial directory": entry(lambda name: name.startswith(".partial-")),
        "file in the partial": partial_file,
        "committed": entry(lambda name: not name.startswith(".")),
        "pruning": entry(lambda name: name.startswith(".deleting-")),
    }


@pytest.mark.parametrize("scenario", kit.SCENARIOS, ids=lambda s: s.name)
def test_sigkill(fault_stack: Callable[[kit.TypeScenario], kit.Cli], scenario: kit.TypeScenario,
                 mode: kit.Mode, results: Results, tmp_path: Path) -> None:
    """Random points first, then milestones, on one stack (its backups accumulate)."""
    cli = fault_stack(scenario)
    duration = kit.measure_run(cli, scenario.backup_type, runs=2)
    listed = kill_at_random_points(cli, scenario, mode, results, tmp_path, duration)
    kill_at_milestones(cli, scenario, mode, results, tmp_path, listed)
    kit.assert_no_failures(results, RANDOM, scenario)
    kit.assert_no_failures(results, MILESTONE, scenario)


Listed = list[dict[str, Any]] | None


def kill_at_random_points(cli: kit.Cli, scenario: kit.TypeScenario, mode: kit.Mode,
                          results: Results, tmp_path: Path, duration: float) -> Listed:
    rng = kit.rng_for(f"kill-{scenario.name}")
    results.note(RANDOM, RANDOM_TEXT, scenario.name,
                 f"a normal run took {duration:.2f} s on this machine")
    listed: Listed = None
    for number in range(mode.trials):
        delay = rng.uniform(0, duration * 1.1)
        with kit.trial(results, RANDOM, RANDOM_TEXT, cli, scenario) as current:
            checks = kit.Checks(cli, scenario)
            checks.snapshot(listed)
            listed = None
            log = tmp_path / f"run-{number}.log"
            proc = cli.start("run", scenario.backup_type, log=log)
            time.sleep(delay)
            current.hit = kit.kill_group(proc)
            cli.seen(log.read_text(errors="replace"), f"killed run {number}")
            checks.after_fault()
            current.checks = checks.done
            listed = checks.listed_after
            duration = checks.next_run_seconds or duration  # the load of the machine varies
    return listed


def kill_at_milestones(cli: kit.Cli, scenario: kit.TypeScenario, mode: kit.Mode,
                       results: Results, tmp_path: Path, listed: Listed) -> None:
    reached: dict[str, int] = {}
    names = list(milestones(cli, scenario, tmp_path / "probe.log"))
    if mode.milestones is not None:  # the short mode: a sample, a different one per seed
        names = kit.rng_for(f"milestones-{scenario.name}").sample(names, mode.milestones)
    for round_number in range(mode.repeats):
        for name in names:
            log = tmp_path / f"run-{round_number}-{name.replace(' ', '-')}.log"
            with kit.trial(results, MILESTONE, MILESTONE_TEXT, cli, scenario, name) as current:
                checks = kit.Checks(cli, scenario)
                checks.snapshot(listed)
                listed = None
                condition = milestones(cli, scenario, log)[name]
                proc = cli.start("run", scenario.backup_type, log=log)
                current.hit = kit.wait_for(condition, proc) and kit.kill_group(proc)
                if not current.hit:
                    kit.kill_group(proc)
                reached[name] = reached.get(name, 0) + current.hit
                cli.seen(log.read_text(errors="replace"), f"run killed at {name}")
                checks.after_fault()
                current.checks = checks.done
                listed = checks.listed_after
    never = sorted(name for name, count in reached.items() if count == 0)
    if never:
        results.note(MILESTONE, MILESTONE_TEXT, scenario.name,
                     f"never reached (the type has no such step, or it ended first): "
                     f"{', '.join(never)}")
