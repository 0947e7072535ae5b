"""Retention rules as tables (tests/unit/retention_table.py: backups in, one line per
decision out, newest first), then the edge cases and invariants of `decide`."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tests.unit.retention_table import NOW, SCENARIOS, P, Scenario, at, ref, render
from trackerbackup.retention import BackupRef, RetentionPolicy, decide, policy_problems


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_decide(scenario: Scenario) -> None:
    backups = [ref(line) for line in scenario.backups]
    random.Random(scenario.name).shuffle(backups)  # input order must not matter

    decisions = decide(backups, at(scenario.now), scenario.policy)

    assert render(decisions) == scenario.expected


def test_buckets_are_utc_dates() -> None:
    # 01:30 at +02:00 is 23:30 UTC the day before: one UTC day, so one daily bucket.
    plus_two = timezone(timedelta(hours=2))
    backups = [
        BackupRef("a", datetime(2026, 11, 25, 1, 30, tzinfo=plus_two), True),
        BackupRef("b", datetime(2026, 11, 24, 22, 0, tzinfo=UTC), True),
    ]

    decisions = decide(backups, at(NOW), P(keep_last=0, keep_daily=7))

    assert [(d.backup.id, d.keep, d.reasons) for d in decisions] == [
        ("a", True, ("daily 2026-11-24",)),
        ("b", False, ("not selected by any rule",)),
    ]


def test_same_start_time_is_ordered_by_id() -> None:
    started = at("2026-11-25 03:00")
    backups = [BackupRef("x1", started, True), BackupRef("x2", started, True)]

    decisions = decide(backups, at(NOW), P(keep_last=1, keep_daily=0))

    assert [(d.backup.id, d.keep) for d in decisions] == [("x2", True), ("x1", False)]


@pytest.mark.parametrize(
    ("policy", "problems"),
    [
        (P(), []),
        (P(keep_last=0, keep_daily=0, keep_monthly=1), []),
        (
            P(keep_daily=-1, max_age_days=-2),
            [
                "keep_daily must be 0 (off) or a positive number, not -1",
                "max_age_days must be 0 (off) or a positive number, not -2",
            ],
        ),
        (
            P(keep_last=0, keep_daily=0, max_age_days=30),
            [
                "no keep rule is set (keep_last, keep_daily, keep_weekly, keep_monthly are all"
                " 0): every backup but the newest verified one would be deleted"
            ],
        ),
    ],
    ids=["defaults", "monthly only", "negative values", "no keep rule"],
)
def test_policy_problems(policy: RetentionPolicy, problems: list[str]) -> None:
    assert policy_problems(policy) == problems


@pytest.mark.parametrize(
    ("backups", "now", "policy", "message"),
    [
        ([], datetime(2026, 11, 26), P(), "'now' must be time-zone aware"),
        ([], at(NOW), P(keep_last=-1), "keep_last must be 0 (off) or a positive number"),
        (
            [ref("2026-11-25 03:00"), ref("2026-11-25 03:00")],
            at(NOW),
            P(),
            "backup ids must be unique",
        ),
    ],
    ids=["naive now", "negative policy", "duplicate ids"],
)
def test_decide_refuses_bad_input(
    backups: list[BackupRef], now: datetime, policy: RetentionPolicy, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        decide(backups, now, policy)


def test_naive_start_time_is_refused() -> None:
    with pytest.raises(ValueError, match="time-zone aware"):
        BackupRef("a", datetime(2026, 11, 25, 3, 0), True)


def test_invariants_over_random_histories() -> None:
    """Whatever the policy and history: never zero backups left, the newest verified one
    kept, no unverified one kept while a verified one exists, and each backup decided once.
    """
    rng = random.Random(20261126)
    now = at(NOW)
    for _ in range(500):
        backups = [
            BackupRef(
                f"b{n}",
                now - timedelta(minutes=rng.randrange(0, 60 * 24 * 400)),
                rng.random() < 0.7,
            )
            for n in range(rng.randrange(0, 30))
        ]
        policy = P(*(rng.choice([0, 0, 1, 2, 7]) for _ in range(5)))

        decisions = decide(backups, now, policy)

        assert sorted(d.backup.id for d in decisions) == sorted(b.id for b in backups)
        assert all(d.reasons for d in decisions)
        kept = [d.backup for d in decisions if d.keep]
        verified = [b for b in backups if b.verified]
        if backups:
            assert kept
        if verified:
            newest = max(verified, key=lambda b: (b.started, b.id))
            assert newest in kept
            assert all(b.verified for b in kept)
        else:
            assert len(kept) == len(backups)


def test_a_protected_backup_is_never_deleted() -> None:
    """What a run passes for the backup it has just made: whatever the rules or the clock
    say, the run does not delete it."""
    made = BackupRef("made", at("2026-11-20 03:00"), True)  # the clock was set back meanwhile
    newer = BackupRef("newer", at("2026-11-25 03:00"), True)

    decisions = decide([made, newer], at(NOW), P(keep_last=1, keep_daily=0),
                       protect=frozenset({"made"}))

    assert [(d.backup.id, d.keep, d.reasons) for d in decisions] == [
        ("newer", True, ("last 1",)),
        ("made", True, ("made by this run",)),
    ]
