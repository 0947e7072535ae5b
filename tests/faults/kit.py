"""What every fault trial needs: the type scenarios, the mode, the CLI, and the checks.

A fault trial injects one fault into a real run on the test bed (writer running), then
`Checks.after_fault` proves what "nothing lost" means: no partial backup listed, every
backup listed before is still there (or was pruned by the policy), every listed backup
verifies, `recover` leaves the tracker running, and the next run succeeds and cleans up.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from tests.faults.report import Results
from tests.faults.secrets_watch import SecretsWatch
from tests.kit.cli import ROOT, command, environment
from tests.kit.wait import wait_until
from tests.testbed.engine import container_state, docker
from tests.testbed.stack import Flavour, Stack
from trackerbackup import retention
from trackerbackup.backup_types import BY_NAME
from trackerbackup.sources.registry import SOURCES

T = TypeVar("T")
MODE_VAR = "TRACKERBACKUP_FAULTS"  # "short" (CI, the default) or "long"
TRIALS_VAR = "TRACKERBACKUP_FAULTS_TRIALS"  # overrides the long mode's count per type
SEED_VAR = "TRACKERBACKUP_FAULTS_SEED"
REPEATS_VAR = "TRACKERBACKUP_FAULTS_REPEATS"  # long mode: each milestone and fault variant
POLICY = retention.RetentionPolicy(keep_last=3, keep_daily=0)
RETENTION_TOML = "keep_last = 3\nkeep_daily = 0\n"


@dataclass(frozen=True)
class TypeScenario:
    """One backup type as the suite drives it: adding a type is one line in SCENARIOS."""

    name: str  # the scenario's name in test ids and docs/reliability.md
    backup_type: str
    flavour: Flavour = "sqlite"
    config: str = ""  # TOML appended to the test bed's config
    rows: int = 20_000
    in_short: bool = True  # part of the short (CI) mode

    @property
    def available(self) -> bool:
        return BY_NAME[self.backup_type].available and self.backup_type in SOURCES

    def config_text(self) -> str:
        return (f"\n[{self.backup_type}]\nenabled = true\n{self.config}"
                f"\n[{self.backup_type}.retention]\n{RETENTION_TOML}")


PAUSE = '\n[sqlite]\nmax_writer_stall = 0.0\nover_budget = "pause"\n'
STOP = '\n[sqlite]\nmax_writer_stall = 0.0\nover_budget = "stop"\n'
ALL_SCENARIOS = (
    # The short mode runs the database type with the tracker paused (its riskiest strategy).
    TypeScenario("database", "database", in_short=False),
    TypeScenario("database-paused", "database", config=PAUSE),
    TypeScenario("database-stop-window", "database", config=STOP, in_short=False),
    TypeScenario("selective", "selective"),
    TypeScenario("storage", "storage"),
    TypeScenario("database-mysql", "database", flavour="mysql"),
    TypeScenario("critical", "critical"),
    TypeScenario("critical-mysql", "critical", flavour="mysql", in_short=False),
)
UNAVAILABLE = tuple(s.name for s in ALL_SCENARIOS if not s.available)


@dataclass(frozen=True)
class Mode:
    name: str
    trials: int  # random-point kills per type
    milestones: int | None  # a sample of that many milestones per type; None: each of them
    repeats: int  # trials of each single fault (per type and variant)

    @classmethod
    def from_env(cls) -> Mode:
        name = os.environ.get(MODE_VAR, "short")
        if name not in ("short", "long"):
            raise ValueError(f"{MODE_VAR}={name!r}: use short or long")
        if name == "short":  # 5 kills per type: 3 at random points, 2 milestones
            return cls("short", 3, 2, 1)
        trials = int(os.environ.get(TRIALS_VAR, "50"))
        repeats = int(os.environ.get(REPEATS_VAR) or max(1, trials // 10))
        return cls("long", trials, None, repeats)

    def describe(self) -> str:
        milestones = (f"a sample of {self.milestones} milestones" if self.milestones is not None
                      else f"every milestone {self.repeats}x")
        others = ("one variant of each other fault, drawn per seed" if self.name == "short"
                  else f"every variant of each other fault {self.repeats}x")
        return f"SIGKILL per type: {self.trials} at random points and {milestones}; {others}"

    def variants(self, name: str, items: list[T]) -> list[T]:
        """Every variant of a fault `repeats` times; the short mode: one, drawn per seed."""
        if self.name == "short":
            return [rng_for(name).choice(items)]
        return items * self.repeats


MODE = Mode.from_env()
SCENARIOS = tuple(s for s in ALL_SCENARIOS
                  if s.available and (s.in_short or MODE.name == "long"))


# One seed per session: the report names it, and setting it repeats the random points.
SEED = int(os.environ.get(SEED_VAR) or time.time_ns() % 1_000_000)


# -- the command line ---------------------------------------------------------------------

@dataclass
class Cli:
    """Runs trackerbackup against one stack; every output is scanned for secrets."""

    stack: Stack
    watch: SecretsWatch
    config: Path | None = None
    outputs: list[str] = field(default_factory=list)

    def argv(self, *args: str, config: Path | None = None) -> list[str]:
        return command(config or self.config or self.stack.config_path, *args)

    def __call__(self, *args: str, config: Path | None = None,
                 timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.argv(*args, config=config), cwd=ROOT, capture_output=True,
                                text=True, check=False, timeout=timeout, env=environment())
        self.seen(result.stdout + result.stderr, f"trackerbackup {' '.join(args)}")
        return result

    def start(self, *args: str, log: Path, config: Path | None = None) -> subprocess.Popen[bytes]:
        """A run in its own process group (killed as systemd kills a unit's cgroup)."""
        with open(log, "wb") as out:
            return subprocess.Popen(self.argv(*args, config=config), cwd=ROOT, stdout=out,
                                    stderr=subprocess.STDOUT, env=environment(),
                                    start_new_session=True)

    def seen(self, text: str, where: str) -> None:
        self.outputs.append(text)
        self.watch.scan_text(text, where)

    def ok(self, *args: str, config: Path | None = None) -> str:
        result = self(*args, config=config)
        if result.returncode != 0:
            raise AssertionError(f"trackerbackup {' '.join(args)} exited "
                                 f"{result.returncode}:\n{result.stdout}{result.stderr}")
        return result.stdout

    def listed(self, backup_type: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = json.loads(self.ok("list", backup_type, "--json"))
        return found


def kill_group(proc: subprocess.Popen[bytes]) -> bool:
    """SIGKILL the run's process group; True if the run was still going."""
    alive = proc.poll() is None
    if alive:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            alive = False
    proc.wait(timeout=60)
    return alive and proc.returncode == -signal.SIGKILL


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen[bytes],
             timeout: float = 60) -> bool:
    """Poll `condition` every millisecond while `proc` runs; False if it ended first (or
    `timeout` passed)."""

    def settled() -> str | None:
        if proc.poll() is not None:
            return "ended"
        return "reached" if condition() else None

    try:
        return wait_until(settled, timeout, interval=0.001) == "reached"
    except TimeoutError:
        return False


def measure_run(cli: Cli, backup_type: str, runs: int = 2) -> float:
    """Seconds of a normal run of the type (the mean of `runs`)."""
    started = time.monotonic()
    for _ in range(runs):
        cli.ok("run", backup_type)
    return (time.monotonic() - started) / runs


def ensure_tracker_running(stack: Stack) -> None:
    """Put the tracker (and its MySQL server) back in service after a fault that stopped or
    paused them."""
    for name in (stack.mysql_container, stack.tracker_container):
        if name is None:
            continue
        state = container_state(name)
        if state == "paused":
            docker("unpause", name)
        elif state != "running":
            docker("start", name)
    if stack.mysql_container is not None:
        stack.wait_mysql()  # a restarted server takes a while to answer


# -- the checks after a fault -------------------------------------------------------------

class TrialFailed(AssertionError):
    """A check after a fault failed: a product bug (or a suite bug) to report."""


@dataclass
class Checks:
    """The invariants around one fault of one type."""

    cli: Cli
    scenario: TypeScenario
    before: list[dict[str, Any]] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    listed_after: list[dict[str, Any]] | None = None  # after the next run: the next snapshot
    next_run_seconds: float | None = None

    @property
    def stack(self) -> Stack:
        return self.cli.stack

    def snapshot(self, listed: list[dict[str, Any]] | None = None) -> None:
        self.before = listed if listed is not None else self.cli.listed(self.scenario.backup_type)

    def after_fault(self, *, tracker_was_running: bool = True, recover_config: Path | None = None,
                    exit_codes: tuple[int, ...] | None = None,
                    result: subprocess.CompletedProcess[str] | None = None) -> None:
        """Every check, in the order an operator would meet the state the fault left."""
        if result is not None:
            self.clean_failure(result, exit_codes)
        self.nothing_partial_listed_and_nothing_lost()
        self.recover_leaves_tracker_running(tracker_was_running, recover_config)
        self.everything_listed_verifies()
        self.next_run_succeeds_and_cleans_up()

    def clean_failure(self, result: subprocess.CompletedProcess[str],
                      exit_codes: tuple[int, ...] | None) -> None:
        text = result.stdout + result.stderr
        if "Traceback" in text:
            raise TrialFailed(f"a traceback (exit {result.returncode}):\n{text[-3000:]}")
        if exit_codes is not None and result.returncode not in exit_codes:
            raise TrialFailed(f"exit {result.returncode}, expected one of {exit_codes}:\n"
                              f"{text[-3000:]}")
        self.done.append("exit code and message (no traceback)")

    def nothing_partial_listed_and_nothing_lost(self) -> None:
        after = self.cli.listed(self.scenario.backup_type)
        bad = [b["id"] for b in after if not b["verified"] or b["problems"]
               or b["id"].startswith(".")]
        if bad:
            raise TrialFailed(f"listed but not a complete verified backup: {bad}")
        before_ids = {b["id"] for b in self.before}
        new = [b for b in after if b["id"] not in before_ids]
        if len(new) > 1:
            raise TrialFailed(f"one run listed {len(new)} new backups: {[b['id'] for b in new]}")
        missing = before_ids - {b["id"] for b in after}
        allowed = prunable(self.before + new, {b["id"] for b in new}) if new else set()
        if missing - allowed:
            raise TrialFailed(f"backups lost by the fault: {sorted(missing - allowed)} "
                              f"(the policy allows pruning only {sorted(allowed)})")
        self.done.append("no partial listed, no earlier backup lost")

    def recover_leaves_tracker_running(self, was_running: bool, config: Path | None) -> None:
        out = self.cli.ok("recover", config=config)
        state = container_state(self.stack.tracker_container)
        if was_running and state != "running":
            raise TrialFailed(f"after recover the tracker is {state} (recover said {out!r})")
        markers = list((self.stack.run_dir / "frozen").glob("*"))
        if markers:
            raise TrialFailed(f"freeze markers left after recover: {markers}")
        if was_running:
            committed = self.stack.writer_status()["committed"]
            self.stack.wait_for_commits(committed + 10, timeout=30)
        self.done.append("tracker running and writing after recover")

    def everything_listed_verifies(self) -> None:
        result = self.cli("verify", self.scenario.backup_type, "--all")
        if result.returncode != 0:
            raise TrialFailed(f"verify --all exited {result.returncode}:\n"
                              f"{result.stdout}{result.stderr}"[-3000:])
        self.done.append("verify --all")

    def next_run_succeeds_and_cleans_up(self) -> None:
        backup_type = self.scenario.backup_type
        started = time.monotonic()
        result = self.cli("run", backup_type)
        self.next_run_seconds = time.monotonic() - started
        if result.returncode != 0:
            raise TrialFailed(f"the next run exited {result.returncode}:\n"
                              f"{result.stdout}{result.stderr}"[-3000:])
        type_dir = self.stack.backup_dir / backup_type
        left = [p.name for p in type_dir.iterdir() if p.name.startswith(".")]
        if left:
            raise TrialFailed(f"the next run left {left} in {type_dir}")
        self.listed_after = self.cli.listed(backup_type)
        if not any(b["verified"] for b in self.listed_after):
            raise TrialFailed("after the next run no verified backup is listed")
        self.done.append("next run succeeds, no leftovers")


def prunable(backups: list[dict[str, Any]], protect: set[str]) -> set[str]:
    """The ids the suite's policy may delete among `backups` (listed dicts)."""
    refs = [retention.BackupRef(id=b["id"], started=datetime.fromisoformat(b["started"]),
                                verified=b["verified"]) for b in backups]
    newest = max(r.started for r in refs)
    decisions = retention.decide(refs, newest, POLICY, protect=frozenset(protect))
    return {d.backup.id for d in decisions if not d.keep}


def rng_for(name: str) -> random.Random:
    return random.Random(f"{SEED}-{name}")


@dataclass
class Trial:
    hit: bool = False
    checks: list[str] = field(default_factory=list)


@contextmanager
def trial(results: Results, fault: str, description: str, cli: Cli,
          scenario: TypeScenario, variant: str = "") -> Iterator[Trial]:
    """One recorded trial: a failed check is recorded (not raised) and the stack repaired,
    so the remaining trials still run; `assert_no_failures` ends the test."""
    current = Trial()
    failure: str | None = None
    try:
        yield current
    except Exception as error:  # a check, the CLI or the test bed: all count as failures
        failure = f"{type(error).__name__}: {error}"
        with suppress(Exception):
            ensure_tracker_running(cli.stack)
            cli("recover")
    row = f"{scenario.name} ({variant})" if variant else scenario.name
    results.record(fault, description, row, hit=current.hit, checks=current.checks,
                   failure=failure)


def assert_no_failures(results: Results, fault: str, scenario: TypeScenario) -> None:
    failures = [f for f in results.failures
                if f.startswith((f"{fault} / {scenario.name}:", f"{fault} / {scenario.name} ("))]
    assert failures == [], "\n\n".join(failures)
