"""The retention rules' table (tests/unit/test_retention.py runs it): backups in, one line
per decision out (newest first).

Input lines are "YYYY-MM-DD HH:MM" (UTC), with " unverified" appended for a backup whose
verification did not pass. Expected lines are "<time> keep|drop: <reasons joined by '; '>".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from trackerbackup.retention import (
    BackupRef,
    Decision,
    RetentionPolicy,
)

NOW = "2026-11-26 03:00"
FORMAT = "%Y-%m-%d %H:%M"


def at(stamp: str) -> datetime:
    return datetime.strptime(stamp, FORMAT).replace(tzinfo=UTC)


def ref(line: str) -> BackupRef:
    started = at(line.removesuffix(" unverified"))
    verified = not line.endswith(" unverified")
    return BackupRef(started.strftime("%Y%m%dT%H%M%S.000000Z"), started, verified)


def render(decisions: list[Decision]) -> list[str]:
    return [
        f"{d.backup.started.astimezone(UTC).strftime(FORMAT)} {'keep' if d.keep else 'drop'}: "
        + "; ".join(d.reasons)
        for d in decisions
    ]


def days(first: str, count: int, *times: str) -> list[str]:
    """Backups on `count` consecutive days starting at `first`, at each of `times`."""
    start = datetime.strptime(first, "%Y-%m-%d")
    return [
        f"{(start + timedelta(days=n)).strftime('%Y-%m-%d')} {time}"
        for n in range(count)
        for time in times
    ]


@dataclass(frozen=True)
class Scenario:
    name: str
    policy: RetentionPolicy
    backups: list[str]
    expected: list[str]
    now: str = NOW


P = RetentionPolicy

SCENARIOS = [
    Scenario(
        "keep_last only",
        P(keep_last=3, keep_daily=0),
        [
            "2026-11-21 03:00",
            "2026-11-22 03:00",
            "2026-11-23 03:00",
            "2026-11-24 03:00",
            "2026-11-25 03:00",
        ],
        [
            "2026-11-25 03:00 keep: last 1",
            "2026-11-24 03:00 keep: last 2",
            "2026-11-23 03:00 keep: last 3",
            "2026-11-22 03:00 drop: not selected by any rule",
            "2026-11-21 03:00 drop: not selected by any rule",
        ],
    ),
    Scenario(
        "daily over 10 days, two a day: the newest of each of the 7 newest days",
        P(keep_last=1, keep_daily=7),
        days("2026-11-16", 10, "01:00", "13:00"),
        [
            "2026-11-25 13:00 keep: last 1; daily 2026-11-25",
            "2026-11-25 01:00 drop: not selected by any rule",
            "2026-11-24 13:00 keep: daily 2026-11-24",
            "2026-11-24 01:00 drop: not selected by any rule",
            "2026-11-23 13:00 keep: daily 2026-11-23",
            "2026-11-23 01:00 drop: not selected by any rule",
            "2026-11-22 13:00 keep: daily 2026-11-22",
            "2026-11-22 01:00 drop: not selected by any rule",
            "2026-11-21 13:00 keep: daily 2026-11-21",
            "2026-11-21 01:00 drop: not selected by any rule",
            "2026-11-20 13:00 keep: daily 2026-11-20",
            "2026-11-20 01:00 drop: not selected by any rule",
            "2026-11-19 13:00 keep: daily 2026-11-19",
            "2026-11-19 01:00 drop: not selected by any rule",
            "2026-11-18 13:00 drop: not selected by any rule",
            "2026-11-18 01:00 drop: not selected by any rule",
            "2026-11-17 13:00 drop: not selected by any rule",
            "2026-11-17 01:00 drop: not selected by any rule",
            "2026-11-16 13:00 drop: not selected by any rule",
            "2026-11-16 01:00 drop: not selected by any rule",
        ],
    ),
    Scenario(
        "daily counts days that have a backup, not calendar days",
        P(keep_last=0, keep_daily=3),
        ["2026-11-01 03:00", "2026-11-10 03:00", "2026-11-20 03:00", "2026-11-25 03:00"],
        [
            "2026-11-25 03:00 keep: daily 2026-11-25",
            "2026-11-20 03:00 keep: daily 2026-11-20",
            "2026-11-10 03:00 keep: daily 2026-11-10",
            "2026-11-01 03:00 drop: not selected by any rule",
        ],
    ),
    Scenario(
        "weekly across the ISO year boundary: 2027-01-02 is in 2026-W53",
        P(keep_last=0, keep_daily=0, keep_weekly=3),
        [
            "2026-12-27 03:00",
            "2026-12-29 03:00",
            "2027-01-02 03:00",
            "2027-01-05 03:00",
            "2027-01-12 03:00",
        ],
        [
            "2027-01-12 03:00 keep: weekly 2027-W02",
            "2027-01-05 03:00 keep: weekly 2027-W01",
            "2027-01-02 03:00 keep: weekly 2026-W53",
            "2026-12-29 03:00 drop: not selected by any rule",
            "2026-12-27 03:00 drop: not selected by any rule",
        ],
        now="2027-01-13 03:00",
    ),
    Scenario(
        "weekly: 2024-12-30 belongs to 2025-W01",
        P(keep_last=0, keep_daily=0, keep_weekly=2),
        ["2024-12-29 03:00", "2024-12-30 03:00", "2025-01-05 03:00", "2025-01-06 03:00"],
        [
            "2025-01-06 03:00 keep: weekly 2025-W02",
            "2025-01-05 03:00 keep: weekly 2025-W01",
            "2024-12-30 03:00 drop: not selected by any rule",
            "2024-12-29 03:00 drop: not selected by any rule",
        ],
        now="2025-01-07 03:00",
    ),
    Scenario(
        "monthly: newest of each of the 3 newest months, across a year end",
        P(keep_last=0, keep_daily=0, keep_monthly=3),
        [
            "2025-11-30 03:00",
            "2025-12-01 03:00",
            "2025-12-31 23:59",
            "2026-01-01 00:00",
            "2026-01-15 03:00",
            "2026-02-01 03:00",
        ],
        [
            "2026-02-01 03:00 keep: monthly 2026-02",
            "2026-01-15 03:00 keep: monthly 2026-01",
            "2026-01-01 00:00 drop: not selected by any rule",
            "2025-12-31 23:59 keep: monthly 2025-12",
            "2025-12-01 03:00 drop: not selected by any rule",
            "2025-11-30 03:00 drop: not selected by any rule",
        ],
        now="2026-02-02 03:00",
    ),
    Scenario(
        "combined rules: a backup kept by several rules lists every reason",
        P(keep_last=2, keep_daily=2, keep_weekly=2, keep_monthly=2),
        [
            "2026-10-20 03:00",
            "2026-10-31 03:00",
            "2026-11-17 03:00",
            "2026-11-24 03:00",
            "2026-11-25 03:00",
            "2026-11-25 15:00",
        ],
        [
            "2026-11-25 15:00 keep: last 1; daily 2026-11-25; weekly 2026-W48; monthly 2026-11",
            "2026-11-25 03:00 keep: last 2",
            "2026-11-24 03:00 keep: daily 2026-11-24",
            "2026-11-17 03:00 keep: weekly 2026-W47",
            "2026-10-31 03:00 keep: monthly 2026-10",
            "2026-10-20 03:00 drop: not selected by any rule",
        ],
    ),
    Scenario(
        "max_age_days (from the newest verified backup) deletes what a bucket rule picked; "
        "the cutoff itself is kept",
        P(keep_last=1, keep_daily=7, max_age_days=3),
        days("2026-11-20", 6, "03:00"),
        [
            "2026-11-25 03:00 keep: last 1; daily 2026-11-25",
            "2026-11-24 03:00 keep: daily 2026-11-24",
            "2026-11-23 03:00 keep: daily 2026-11-23",
            "2026-11-22 03:00 keep: daily 2026-11-22",
            "2026-11-21 03:00 drop: older than max_age_days=3",
            "2026-11-20 03:00 drop: older than max_age_days=3",
        ],
        now="2026-11-26 03:00",
    ),
    Scenario(
        "weeks without a backup: a `now` far past max_age_days expires nothing by itself",
        P(keep_last=3, keep_daily=7, max_age_days=30),
        ["2026-09-01 03:00", "2026-09-02 03:00", "2026-09-03 03:00"],
        [
            "2026-09-03 03:00 keep: last 1; daily 2026-09-03",
            "2026-09-02 03:00 keep: last 2; daily 2026-09-02",
            "2026-09-01 03:00 keep: last 3; daily 2026-09-01",
        ],
    ),
    Scenario(
        "floor: all older than max_age_days before the newest, which stays",
        P(keep_last=0, keep_daily=7, max_age_days=30),
        ["2026-09-01 03:00", "2026-09-02 03:00", "2026-11-03 03:00"],
        [
            "2026-11-03 03:00 keep: daily 2026-11-03",
            "2026-09-02 03:00 drop: older than max_age_days=30",
            "2026-09-01 03:00 drop: older than max_age_days=30",
        ],
    ),
    Scenario(
        "a backup made while the clock had jumped a year ahead cannot make max_age_days "
        "take the keep_last backups before it",
        P(keep_last=3, keep_daily=7, max_age_days=30),
        ["2026-11-23 03:00", "2026-11-24 03:00", "2026-11-25 03:00", "2027-11-26 03:00"],
        [
            "2027-11-26 03:00 keep: last 1; daily 2027-11-26",
            "2026-11-25 03:00 keep: last 2; daily 2026-11-25",
            "2026-11-24 03:00 keep: last 3; daily 2026-11-24",
            "2026-11-23 03:00 drop: older than max_age_days=30",
        ],
        now="2027-11-26 04:00",
    ),
    Scenario(
        "floor: no keep rule at all still keeps the newest verified one",
        P(keep_last=0, keep_daily=0),
        ["2026-11-24 03:00", "2026-11-25 03:00 unverified", "2026-11-25 04:00 unverified"],
        [
            "2026-11-25 04:00 drop: not verified",
            "2026-11-25 03:00 drop: not verified",
            "2026-11-24 03:00 keep: newest verified (floor)",
        ],
    ),
    Scenario(
        "unverified backups are deleted and never fill a bucket",
        P(keep_last=2, keep_daily=3, max_age_days=10),
        [
            "2026-11-01 03:00 unverified",
            "2026-11-23 03:00",
            "2026-11-24 03:00",
            "2026-11-24 15:00 unverified",
            "2026-11-25 03:00 unverified",
        ],
        [
            "2026-11-25 03:00 drop: not verified",
            "2026-11-24 15:00 drop: not verified",
            "2026-11-24 03:00 keep: last 1; daily 2026-11-24",
            "2026-11-23 03:00 keep: last 2; daily 2026-11-23",
            "2026-11-01 03:00 drop: not verified; older than max_age_days=10",
        ],
    ),
    Scenario(
        "empty input",
        P(),
        [],
        [],
    ),
    Scenario(
        "no verified backup at all: nothing is deleted, however old",
        P(keep_last=1, keep_daily=1, max_age_days=1),
        [
            "2026-10-01 03:00 unverified",
            "2026-11-24 03:00 unverified",
            "2026-11-25 03:00 unverified",
        ],
        [
            "2026-11-25 03:00 keep: no verified backup: nothing is deleted (floor)",
            "2026-11-24 03:00 keep: no verified backup: nothing is deleted (floor)",
            "2026-10-01 03:00 keep: no verified backup: nothing is deleted (floor)",
        ],
    ),
    Scenario(
        "ten days of failures (no new backups) do not erase the last good one",
        P(keep_last=1, keep_daily=7, max_age_days=7),
        ["2026-11-14 03:00", "2026-11-15 03:00", "2026-11-16 03:00"],
        [
            "2026-11-16 03:00 keep: last 1; daily 2026-11-16",
            "2026-11-15 03:00 keep: daily 2026-11-15",
            "2026-11-14 03:00 keep: daily 2026-11-14",
        ],
    ),
    Scenario(
        "ten days of unverified backups do not push the last good ones out",
        P(keep_last=2, keep_daily=7, max_age_days=30),
        ["2026-11-14 03:00", "2026-11-15 03:00", *days("2026-11-16", 10, "03:00 unverified")],
        [
            *[f"2026-11-{day} 03:00 drop: not verified" for day in range(25, 15, -1)],
            "2026-11-15 03:00 keep: last 1; daily 2026-11-15",
            "2026-11-14 03:00 keep: last 2; daily 2026-11-14",
        ],
    ),
]


SCENARIOS += [
    Scenario(
        "a backup from the future (a bad clock) is kept but never counted",
        P(keep_last=1, keep_daily=1),
        ["2099-01-01 00:00", "2026-11-24 03:00", "2026-11-26 02:59"],
        [
            "2099-01-01 00:00 keep: started in the future (a wrong clock?): kept, not counted",
            "2026-11-26 02:59 keep: last 1; daily 2026-11-26",
            "2026-11-24 03:00 drop: not selected by any rule",
        ],
    ),
    Scenario(
        "only future backups: nothing is deleted",
        P(keep_last=1, keep_daily=1),
        ["2099-01-01 00:00", "2026-11-24 03:00 unverified"],
        [
            "2099-01-01 00:00 keep: started in the future (a wrong clock?): kept, not counted",
            "2026-11-24 03:00 keep: no verified backup: nothing is deleted (floor)",
        ],
    ),
    Scenario(
        "once the clock has passed it, a backup dated ahead is an ordinary one",
        P(keep_last=1, keep_daily=1),
        ["2026-11-26 03:00", "2026-11-26 02:00"],
        [
            "2026-11-26 03:00 keep: last 1; daily 2026-11-26",
            "2026-11-26 02:00 drop: not selected by any rule",
        ],
    ),
]
