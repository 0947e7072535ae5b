"""Days of failures under a simulated clock: retention (a pure function) never deletes the
newest good backup, the backup a run just made, or anything while nothing is verified."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.faults import kit
from tests.faults.report import Results
from trackerbackup.retention import BackupRef, RetentionPolicy, decide

CLOCK = "repeated failures for days (simulated clock)"
CLOCK_TEXT = ("120 simulated days, 1-4 runs a day, each run drawn: success, failure (no "
              "backup), a backup whose verification failed, or a host clock off by up to "
              "+-3 days; retention (`retention.decide`, as `run` and `prune` call it) after "
              "each run, under several policies. After every step: the newest verified "
              "backup is kept, the run's own backup is kept, nothing is deleted while no "
              "backup is verified, a future-dated backup never costs a good one.")
POLICIES = [RetentionPolicy(keep_last=1, keep_daily=1), RetentionPolicy(),
            RetentionPolicy(keep_last=3, keep_daily=7, keep_weekly=4, keep_monthly=3),
            RetentionPolicy(keep_last=1, keep_daily=0, max_age_days=2),
            RetentionPolicy(keep_last=3, keep_daily=7, max_age_days=5)]
SCENARIO = kit.TypeScenario("retention", "database")


def simulate(policy: RetentionPolicy, seed_name: str) -> list[str]:
    rng = kit.rng_for(seed_name)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    kept: list[BackupRef] = []
    problems: list[str] = []
    failing_until = start
    for step in range(120 * 4):
        now = start + timedelta(hours=6 * step + rng.uniform(0, 5))
        if now < failing_until or rng.random() < 0.05:
            if now >= failing_until:  # a streak of failures: 1 to 10 days
                failing_until = now + timedelta(days=rng.uniform(1, 10))
            continue
        outcome = rng.choice(["ok"] * 6 + ["unverified", "skewed"])
        clock = now + (timedelta(days=rng.uniform(-3, 3)) if outcome == "skewed"
                       else timedelta())
        made = BackupRef(f"{step:06d}", clock, verified=outcome != "unverified")
        kept.append(made)
        good_before = [b for b in kept if b.verified and b.started <= now]
        decisions = decide(kept, now, policy, protect=frozenset({made.id}))
        deleted = {d.backup.id for d in decisions if not d.keep}
        kept = [b for b in kept if b.id not in deleted]
        if made.id in deleted:
            problems.append(f"step {step}: the run's own backup was deleted")
        if good_before:
            newest = max(good_before, key=lambda b: (b.started, b.id))
            if newest.id in deleted:
                problems.append(f"step {step}: the newest verified backup was deleted")
        elif deleted:
            problems.append(f"step {step}: deleted {sorted(deleted)} with nothing verified")
    return problems


def test_days_of_failures_never_delete_the_newest_good_backup(mode: kit.Mode,
                                                              results: Results) -> None:
    for number in range(mode.trials):
        for index, policy in enumerate(POLICIES):
            problems = simulate(policy, f"clock-{number}-{index}")
            results.record(CLOCK, CLOCK_TEXT, "retention", hit=True,
                           checks=["newest verified kept", "own backup kept",
                                   "nothing deleted while none verified"],
                           failure="; ".join(problems[:3]) if problems else None)
    kit.assert_no_failures(results, CLOCK, SCENARIO)
