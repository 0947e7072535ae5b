"""Pure GFS retention: `decide(backups, now, policy) -> decisions`, nothing else.

The rules are the ones operators know from `restic forget` (and borg/borgmatic `prune`):

- `keep_last` keeps the N newest backups.
- `keep_daily`, `keep_weekly`, `keep_monthly` keep the newest backup of each UTC day,
  ISO week (`2026-W47`, ISO week-numbering year) and month, for the N newest buckets that
  hold a backup (buckets without backups are skipped, as in restic).
- Each rule is applied on its own (restic style): a backup picked by several rules is kept
  once and lists every reason. Unlike restic >= 0.14 and borg, a rule with counts left
  over does not additionally keep the oldest backup: a bucket rule only ever keeps the
  newest backup of a bucket.
- `max_age_days` deletes every backup that started more than that many days before the
  newest verified backup (restic's `--keep-within` measures from the newest snapshot
  too), even one a daily/weekly/monthly rule picked, but never one of the `keep_last`
  newest verified backups. 0 turns a rule off.

Safety, after the failure modes reported against comparable tools:

- Only verified backups count: an unverified backup never fills a bucket (so a run of
  failed or unverified backups cannot push good ones out) and is deleted.
- Floor: the newest verified backup is always kept, whatever the rules and its age.
- If no backup is verified, nothing is deleted: prune after days of failures never leaves
  zero backups.
- Clocks are not trusted: a backup that started after `now` (made while a clock was wrong)
  is kept and counts for nothing (neither the floor nor a bucket), so it can never push
  out the backups made since; once `now` passes its time it is an ordinary backup. Ages
  are measured from the newest verified backup, not from `now`: a `now` far ahead (a
  clock that jumped, or weeks without a good backup) expires nothing by itself, and a
  backup made under a clock that jumped ahead cannot make `max_age_days` take the
  `keep_last` backups before it.
- `protect` names backups that are kept whatever the rules say: the run that just made a
  backup never deletes it.

Time comes from each backup's manifest (`BackupRef.started`), never file mtimes; buckets
are UTC calendar dates, so a host's time-zone change never moves a backup between days.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True)
class RetentionPolicy:
    """How many backups of one type to keep; 0 turns a rule off."""

    keep_last: int = 1
    keep_daily: int = 7
    keep_weekly: int = 0
    keep_monthly: int = 0
    max_age_days: int = 0


@dataclass(frozen=True)
class BackupRef:
    """One committed backup as retention sees it; `started` is tz-aware (manifest time)."""

    id: str
    started: datetime
    verified: bool

    def __post_init__(self) -> None:
        if self.started.tzinfo is None or self.started.utcoffset() is None:
            raise ValueError(f"backup {self.id}: 'started' must be time-zone aware")


@dataclass(frozen=True)
class Decision:
    """Keep or delete one backup, and every reason for it (what a dry run prints)."""

    backup: BackupRef
    keep: bool
    reasons: tuple[str, ...]


FLOOR_REASON = "newest verified (floor)"
NO_VERIFIED_REASON = "no verified backup: nothing is deleted (floor)"
NOT_VERIFIED_REASON = "not verified"
NOT_SELECTED_REASON = "not selected by any rule"
FUTURE_REASON = "started in the future (a wrong clock?): kept, not counted"
PROTECTED_REASON = "made by this run"

_KEEP_RULES = ("keep_last", "keep_daily", "keep_weekly", "keep_monthly")


def policy_problems(policy: RetentionPolicy) -> list[str]:
    """Every problem with `policy`, each naming its key; empty when the policy is usable.

    For `config` to report with the key path. A policy without any keep_* rule is a
    problem: it would delete every backup but the newest verified one.
    """
    problems = _negative_values(policy)
    if all(getattr(policy, name) == 0 for name in _KEEP_RULES):
        problems.append(
            "no keep rule is set (keep_last, keep_daily, keep_weekly, keep_monthly are all 0):"
            " every backup but the newest verified one would be deleted"
        )
    return problems


def _negative_values(policy: RetentionPolicy) -> list[str]:
    return [
        f"{f.name} must be 0 (off) or a positive number, not {getattr(policy, f.name)}"
        for f in fields(policy)
        if getattr(policy, f.name) < 0
    ]


def _day(started: datetime) -> str:
    return started.astimezone(UTC).date().isoformat()


def _week(started: datetime) -> str:
    year, week, _ = started.astimezone(UTC).isocalendar()
    return f"{year}-W{week:02d}"


def _month(started: datetime) -> str:
    return started.astimezone(UTC).strftime("%Y-%m")


_BUCKETS: tuple[tuple[str, str, Callable[[datetime], str]], ...] = (
    ("keep_daily", "daily", _day),
    ("keep_weekly", "weekly", _week),
    ("keep_monthly", "monthly", _month),
)


def _selected(verified: Sequence[BackupRef], policy: RetentionPolicy) -> dict[str, list[str]]:
    """Reasons per backup id from the keep rules; `verified` is newest first."""
    reasons: dict[str, list[str]] = {b.id: [] for b in verified}
    for position, backup in enumerate(verified[: policy.keep_last], start=1):
        reasons[backup.id].append(f"last {position}")
    for rule, label, bucket_of in _BUCKETS:
        left = getattr(policy, rule)
        previous: str | None = None
        for backup in verified:
            if left == 0:
                break
            bucket = bucket_of(backup.started)
            if bucket != previous:  # newest first: the first one seen is the bucket's newest
                reasons[backup.id].append(f"{label} {bucket}")
                previous = bucket
                left -= 1
    return reasons


def decide(backups: Sequence[BackupRef], now: datetime, policy: RetentionPolicy,
           protect: frozenset[str] = frozenset()) -> list[Decision]:
    """Keep or delete each backup, newest first (by `started`, then `id`).

    Raises ValueError for a naive `now`, a negative policy value or a repeated backup id:
    those are bugs in the caller, never something to guess about before deleting.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("'now' must be time-zone aware")
    negative = _negative_values(policy)
    if negative:
        raise ValueError("; ".join(negative))
    ids = [b.id for b in backups]
    if len(set(ids)) != len(ids):
        raise ValueError("backup ids must be unique")

    ordered = sorted(backups, key=lambda b: (b.started, b.id), reverse=True)
    return [d if d.keep or d.backup.id not in protect
            else Decision(d.backup, True, (PROTECTED_REASON,))
            for d in _decide(ordered, now, policy)]


def _decide(ordered: list[BackupRef], now: datetime, policy: RetentionPolicy) -> list[Decision]:
    future = {b.id for b in ordered if b.started > now}
    verified = [b for b in ordered if b.verified and b.id not in future]
    if not verified:
        return [Decision(b, True, (FUTURE_REASON if b.id in future else NO_VERIFIED_REASON,))
                for b in ordered]

    floor = verified[0]
    selected = _selected(verified, policy)
    cutoff = floor.started - timedelta(days=policy.max_age_days) if policy.max_age_days else None
    newest_ids = {b.id for b in verified[:policy.keep_last]}
    age_reason = f"older than max_age_days={policy.max_age_days}"

    decisions: list[Decision] = []
    for backup in ordered:
        expired = cutoff is not None and backup.started < cutoff and backup.id not in newest_ids
        if backup.id in future:
            decisions.append(Decision(backup, True, (FUTURE_REASON,)))
        elif not backup.verified:
            reasons = [NOT_VERIFIED_REASON] + ([age_reason] if expired else [])
            decisions.append(Decision(backup, False, tuple(reasons)))
        elif expired:
            if backup is floor:
                decisions.append(Decision(backup, True, (FLOOR_REASON,)))
            else:
                decisions.append(Decision(backup, False, (age_reason,)))
        elif selected[backup.id]:
            decisions.append(Decision(backup, True, tuple(selected[backup.id])))
        elif backup is floor:
            decisions.append(Decision(backup, True, (FLOOR_REASON,)))
        else:
            decisions.append(Decision(backup, False, (NOT_SELECTED_REASON,)))
    return decisions
