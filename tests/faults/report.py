"""The suite's results, and `docs/reliability.md` written from them (long mode).

Each test records its trials under a fault name: per type scenario, how many trials, how
many the fault hit (e.g. the kill landed before the run ended), how many failed, which
checks ran after each trial, and the first failures in full.
"""

from __future__ import annotations

import subprocess
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path


@dataclass
class Row:
    trials: int = 0
    hit: int = 0
    failures: int = 0
    checks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add_checks(self, checks: list[str]) -> None:
        for check in checks:
            if check not in self.checks:
                self.checks.append(check)


@dataclass
class Results:
    faults: dict[str, dict[str, Row]] = field(default_factory=lambda: defaultdict(dict))
    descriptions: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def row(self, fault: str, description: str, scenario: str) -> Row:
        self.descriptions.setdefault(fault, description)
        return self.faults[fault].setdefault(scenario, Row())

    def record(self, fault: str, description: str, scenario: str, *, hit: bool,
               checks: list[str], failure: str | None = None) -> None:
        row = self.row(fault, description, scenario)
        row.trials += 1
        row.hit += hit
        row.add_checks(checks)
        if failure is not None:
            row.failures += 1
            self.failures.append(f"{fault} / {scenario}: {failure}")

    def note(self, fault: str, description: str, scenario: str, note: str) -> None:
        row = self.row(fault, description, scenario)
        if note not in row.notes:
            row.notes.append(note)


def render(results: Results, *, mode: str, seed: int, counts: str, unavailable: tuple[str, ...],
           secrets_line: str, root: Path) -> str:
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    lines = [
        "# Reliability: the fault-injection suite",
        "",
        "Written by the fault suite (tests/faults/report.py): `nox -s faults -- long` "
        "writes this file; do not edit it by hand.",
        f"Last run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit or 'unknown'}, "
        f"mode {mode} ({counts}), seed {seed} "
        f"(`TRACKERBACKUP_FAULTS_SEED={seed}` repeats the random points).",
        "",
        "Every trial runs on the Docker test bed with the tracker stand-in writing. "
        "*Trials*: faults injected; *hit*: trials where the fault landed while the run "
        "was going (a kill before the run ended, a fill before it committed, ...); "
        "*failures*: trials after which a check failed. CI runs the short mode "
        "(`nox -s faults`, also part of `nox -s tests`).",
        "",
        f"Secrets: {secrets_line}",
    ]
    if unavailable:
        lines += ["", f"Types not available in this version (not run): {', '.join(unavailable)}."]
    lines += kills_per_scenario(results)
    for fault in sorted(results.faults):
        lines += ["", f"## {fault}", "", results.descriptions[fault], "",
                  "| type scenario | trials | hit | failures | checked after each trial |",
                  "| --- | ---: | ---: | ---: | --- |"]
        for scenario, row in sorted(results.faults[fault].items()):
            if not row.trials:
                continue  # a row holding notes only
            lines.append(f"| {scenario} | {row.trials} | {row.hit} | {row.failures} | "
                         f"{'; '.join(row.checks)} |")
        notes = [f"- {scenario}: {note}" for scenario, row in sorted(results.faults[fault].items())
                 for note in row.notes]
        lines += ["", *notes] if notes else []
    if results.failures:
        lines += ["", "## Failures", ""]
        lines += [f"- {failure.splitlines()[0][:300]}" for failure in results.failures[:30]]
    return "\n".join(lines) + "\n"


def kills_per_scenario(results: Results) -> list[str]:
    """A summary of the SIGKILL faults: random points + milestones per type scenario."""
    kills: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for fault, rows in results.faults.items():
        if not fault.startswith("SIGKILL"):
            continue
        for name, row in rows.items():
            counts = kills[name.split(" (")[0]]
            counts[0] += row.trials
            counts[1] += row.failures
    if not kills:
        return []
    lines = ["", "SIGKILL trials per type scenario (random points and milestones together):", "",
             "| type scenario | SIGKILL trials | failures |", "| --- | ---: | ---: |"]
    lines += [f"| {name} | {trials} | {failures} |"
              for name, (trials, failures) in sorted(kills.items())]
    return lines
