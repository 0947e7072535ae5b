"""The backup types: the one list that every other place derives from or is tested against.

Derived from it: the configuration's type tables and their defaults (`config`), the
command line's TYPE checks (`cli`, `cli_restore`), the units the package's prerm stops
(`debian/rules` runs `python3 -m trackerbackup.backup_types units`: every type's, and the
verify job's). Tested against it: the source registry (`sources/registry.py`), the bash
completion and the timer drop-ins (tests).

A type whose source does not exist yet is listed (so its table, timer and messages are in
place) but not `available`: it is disabled by default and `check` refuses it enabled.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from trackerbackup.retention import RetentionPolicy

SELECTIVE_DEFAULT_PATHS = (
    "storage/tracker/etc",
    "storage/caddy/etc",
    "storage/caddy/data",
    "storage/grafana/provisioning",
    "storage/prometheus/etc",
    "docker-compose.yml",
    ".env",
)
# What an operator cannot get back from the next announces (issue 15): the auth keys, the
# whitelist, the download counters and the torrents that were downloaded at least once.
CRITICAL_DEFAULT_TABLES = ("keys", "whitelist", "torrent_aggregate_metrics", "torrents")
CRITICAL_DEFAULT_ROW_FILTERS = ("torrents.completed > 0",)
DEFAULT_RETENTION = RetentionPolicy()
# Every 15 minutes: the last 24 hours of snapshots, then one a day for a week.
CRITICAL_RETENTION = RetentionPolicy(keep_last=96, keep_daily=7)


@dataclass(frozen=True)
class BackupType:
    """One backup type: a config table `[name]` and the unit `trackerbackup@name`."""

    name: str
    summary: str
    available: bool  # a source exists in this version (sources/registry.py)
    paths: tuple[str, ...] | None = None  # default of the table's `paths`; None: no such key
    exclude: bool = False  # the table has an `exclude` key
    tables: tuple[str, ...] | None = None  # default of `tables`; None: no such key
    row_filters: tuple[str, ...] = ()  # default of `row_filters` (with `tables` only)
    retention: RetentionPolicy = DEFAULT_RETENTION


TYPES = (
    BackupType("storage", "the whole storage tree, the compose file and its .env; every "
               "SQLite database replaced by a consistent snapshot", available=True,
               exclude=True),
    BackupType("database", "the tracker's database as a consistent, integrity-checked "
               "snapshot", available=True),
    BackupType("selective", "what an operator cannot lose: configuration, TLS data, the "
               "compose file and its .env", available=True, paths=SELECTIVE_DEFAULT_PATHS,
               exclude=True),
    BackupType("critical", "a filtered snapshot of what the tracker cannot get back from "
               "announces (keys, whitelist, metrics, downloaded torrents), every 15 minutes",
               available=True, tables=CRITICAL_DEFAULT_TABLES,
               row_filters=CRITICAL_DEFAULT_ROW_FILTERS, retention=CRITICAL_RETENTION),
)
NAMES = tuple(t.name for t in TYPES)
BY_NAME = {t.name: t for t in TYPES}
# The one instance of the template units that is not a backup type: `trackerbackup run
# verify` checks the newest backup of every enabled type, on its own timer (cli_restore).
VERIFY_JOB = "verify"
UNIT_INSTANCES = (*NAMES, VERIFY_JOB)


def units(instance: str) -> tuple[str, str]:
    """The timer and the service of one instance of the template units."""
    return f"trackerbackup@{instance}.timer", f"trackerbackup@{instance}.service"


def main(argv: list[str]) -> int:
    """`units`: every instance's timer, then every instance's service (what prerm stops)."""
    if argv != ["units"]:
        print("usage: python3 -m trackerbackup.backup_types units", file=sys.stderr)
        return 2
    timers = [units(name)[0] for name in UNIT_INSTANCES]
    services = [units(name)[1] for name in UNIT_INSTANCES]
    print(" ".join(timers + services), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
