"""`trackerbackup offsite init|sync|list|prune`, `restore --from offsite`, `verify --offsite`."""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from trackerbackup import lock, offsite_sync
from trackerbackup.backup_types import NAMES
from trackerbackup.config import Config
from trackerbackup.docker import Docker
from trackerbackup.errors import ExitCode, TrackerBackupError, UsageError
from trackerbackup.offsite import Restic, secret_file_problems
from trackerbackup.restore import RestoreOptions
from trackerbackup.sources import StoredBackup
from trackerbackup.sources.registry import source_kind
from trackerbackup.verify import Verified, verify_backup

DEFAULT_READ_DATA_SUBSET = "2%"


def add_parsers(commands: Any) -> None:
    offsite = commands.add_parser("offsite", help="off-site copies in a restic repository")
    actions = offsite.add_subparsers(dest="offsite_action", required=True, metavar="ACTION",
                                     parser_class=type(offsite))
    actions.add_parser("init", help="create the repository ([offsite] repository)")
    sync = actions.add_parser("sync", help="push every local backup not yet off-site")
    sync.add_argument("type", metavar="TYPE", nargs="?", help="only this type")
    listing = actions.add_parser("list", help="this host's off-site backups")
    add_list_options(listing)
    prune = actions.add_parser("prune", help="apply the [offsite] keep_* rules to this "
                               "host's snapshots (restic forget --prune)")
    prune.add_argument("type", metavar="TYPE", nargs="?", help="only this type")
    prune.add_argument("--dry-run", action="store_true", help="only show the decisions")


def add_list_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--all-hosts", action="store_true", help="every host's backups")
    parser.add_argument("--host", help="this host's backups (default: [offsite] host)")


def _types(conf: Config, selected: str | None) -> tuple[str, ...]:
    if selected is not None:
        if selected not in NAMES:
            raise UsageError(f"unknown backup type '{selected}'",
                             hint=f"use one of: {', '.join(NAMES)}")
        return (selected,)
    return tuple(t for t in NAMES if conf.offsite.pushes(t, conf.type(t).enabled))


def cmd_offsite(conf: Config, args: argparse.Namespace) -> int:
    action = args.offsite_action
    if action == "init":
        Restic(conf).init()
        print("created the off-site repository")
        return ExitCode.OK
    if action == "list":
        return cmd_list_offsite(conf, args)
    restic = Restic(conf)
    for backup_type in _types(conf, args.type):
        with lock.hold(conf.general.run_dir, backup_type, wait=False):
            if action == "sync":
                for backup_id in offsite_sync.sync(conf, backup_type, restic):
                    print(f"{backup_type} {backup_id}: copied off-site")
            else:
                _print_prune(backup_type, offsite_sync.prune(
                    conf, backup_type, dry_run=args.dry_run, restic=restic), args.dry_run)
    return ExitCode.OK


def _print_prune(backup_type: str, decisions: list[Any], dry_run: bool) -> None:
    verb = ("would forget", "would keep") if dry_run else ("forgot", "kept")
    for decision in decisions:
        print(f"{backup_type:<10} {decision.backup.id:<26} "
              f"{verb[1] if decision.keep else verb[0]:<13} {', '.join(decision.reasons)}")


def cmd_list_offsite(conf: Config, args: argparse.Namespace) -> int:
    host = None if args.all_hosts else (args.host or conf.offsite.host_name)
    backups = offsite_sync.offsite_backups(Restic(conf), getattr(args, "type", None), host)
    if getattr(args, "json", False):
        print(json.dumps([{"host": b.host, "type": b.type, "id": b.id, "complete": b.complete,
                           "snapshots": [s.id for s in b.snapshots]} for b in backups],
                         indent=2))
        return ExitCode.OK
    if not backups:
        print(f"no off-site backups{'' if host is None else f' of host {host}'}")
        return ExitCode.OK
    print(f"{'HOST':<20} {'TYPE':<10} {'ID':<26} COMPLETE")
    for backup in backups:
        print(f"{backup.host:<20} {backup.type:<10} {backup.id:<26} "
              f"{'yes' if backup.complete else 'NO (interrupted push)'}")
    return ExitCode.OK


def check_offsite(conf: Config) -> bool:
    """`check`'s off-site part: the secret files, then the repository answers; True if a
    problem was printed."""
    if not conf.offsite.enabled:
        return False
    problems = secret_file_problems(conf.offsite)
    for problem in problems:
        print(f"PROBLEM: {problem}")
    if problems:
        return True
    try:
        backups = offsite_sync.offsite_backups(Restic(conf), None, conf.offsite.host_name)
    except TrackerBackupError as error:
        print(f"PROBLEM: off-site repository: {error}")
        return True
    print(f"off-site repository: reachable, {sum(b.complete for b in backups)} backup(s) "
          f"of host {conf.offsite.host_name}")
    return False


def offsite_fetch(host: str | None) -> Any:
    """restore's `fetch` for --from offsite."""
    @contextmanager
    def fetch(conf: Config, options: RestoreOptions) -> Iterator[StoredBackup]:
        with offsite_sync.fetch(conf, options.backup_type, options.backup_id, host) as backup:
            yield backup

    return fetch


def verify_offsite(conf: Config, types: tuple[str, ...]) -> tuple[str, list[Verified]]:
    """restic check with a bounded --read-data-subset (exit status checked), then one
    sampled backup per type fetched (raw sha256 against its manifest) and verified like a
    local one. Returns restic's last line and the outcomes."""
    restic = Restic(conf)
    checked = restic.check(DEFAULT_READ_DATA_SUBSET).strip().splitlines()
    outcomes = []
    docker = Docker(conf.general.docker)
    for backup_type in types:
        remote = [b for b in offsite_sync.offsite_backups(
            restic, backup_type, conf.offsite.host_name) if b.complete]
        if not remote:
            continue
        sampled = random.choice(remote).id  # noqa: S311 - a sample, not a secret
        with lock.hold(conf.general.run_dir, backup_type, wait=True), \
                offsite_sync.fetch(conf, backup_type, sampled) as backup:
            outcomes.append(verify_backup(backup, source_kind(backup.manifest.kind, conf,
                                                              docker)))
    return (checked[-1] if checked else ""), outcomes
