"""The `verify` and `restore` sub-commands (and `run verify`, what the verify unit runs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from trackerbackup import cli_offsite, lock, monitoring, runner
from trackerbackup.backup_types import NAMES
from trackerbackup.config import Config
from trackerbackup.docker import Docker
from trackerbackup.errors import ExitCode, UsageError
from trackerbackup.log import get_logger
from trackerbackup.repository import Repository
from trackerbackup.restore import RestoreOptions, local_backup, restore
from trackerbackup.sources import StoredBackup
from trackerbackup.sources.registry import source_kind
from trackerbackup.verify import Verified, verify_backup

logger = get_logger()


def add_parsers(commands: Any) -> None:
    verify = commands.add_parser("verify", help="check stored backups end to end")
    verify.add_argument("type", metavar="TYPE", nargs="?", help="only this type")
    which = verify.add_mutually_exclusive_group()
    which.add_argument("--id", help="this backup")
    which.add_argument("--latest", action="store_true", help="the newest of each type "
                       "(the default)")
    which.add_argument("--all", action="store_true", help="every backup")
    verify.add_argument("--offsite", action="store_true",
                        help="also check the off-site repository (restic check "
                        "--read-data-subset) and one sampled off-site backup per type")

    restore_cmd = commands.add_parser("restore", help="restore a backup")
    restore_cmd.add_argument("type", metavar="TYPE")
    pick = restore_cmd.add_mutually_exclusive_group(required=True)
    pick.add_argument("--id", help="this backup")
    pick.add_argument("--latest", action="store_true", help="the newest verified backup")
    where = restore_cmd.add_mutually_exclusive_group()
    where.add_argument("--target", type=str, metavar="DIR",
                       help="write into DIR; touches no container and no live file "
                       "(MySQL: load into a new database of this name)")
    where.add_argument("--in-place", action="store_true",
                       help="over the live files (archives: the tracker must be stopped)")
    how = restore_cmd.add_mutually_exclusive_group()
    how.add_argument("--merge", dest="critical_mode", action="store_const", const="merge",
                     help="critical: upsert into the live tables (the larger completed "
                          "count wins)")
    how.add_argument("--replace", dest="critical_mode", action="store_const",
                     const="replace", help="critical: the live tables become the snapshot's")
    restore_cmd.add_argument("--only", nargs="+", default=[], metavar="PATH",
                             help="archives: only these members (and what is under them)")
    restore_cmd.add_argument("--dry-run", action="store_true", help="print every step only")
    restore_cmd.add_argument("--yes", action="store_true",
                             help="do not ask before stopping a container or overwriting")
    restore_cmd.add_argument("--force", action="store_true",
                             help="restore even a backup that fails verification")
    restore_cmd.add_argument("--no-safety-copy", dest="safety_copy", action="store_false",
                             help="a database in place: do not keep the live database in "
                             "<backup_dir>/safety/ first (MySQL: no safety dump; faster, "
                             "and no way back but another backup)")
    restore_cmd.add_argument("--from", dest="origin", choices=("local", "offsite"),
                             default="local", help="offsite: fetch the backup from the "
                             "restic repository (checked against its manifest first)")
    restore_cmd.add_argument("--host", help="with --from offsite: another host's backup "
                             "(default: [offsite] host)")


def cmd_verify(conf: Config, args: argparse.Namespace) -> int:
    types = (args.type,) if args.type else _enabled_types(conf)
    failed = 0
    for backup_type in types:
        if backup_type not in NAMES:
            raise UsageError(f"unknown type {backup_type!r}",
                             hint=f"one of: {', '.join(NAMES)}")
        with lock.hold(conf.general.run_dir, backup_type, wait=True):
            for outcome in _verify_type(conf, backup_type, args):
                failed += not outcome.record.ok
                _print_verified(outcome)
    if getattr(args, "offsite", False):
        summary, outcomes = cli_offsite.verify_offsite(conf, types)
        print(f"off-site repository: {summary}")
        for outcome in outcomes:
            failed += not outcome.record.ok
            print("off-site ", end="")
            _print_verified(outcome)
    return ExitCode.BACKUP_FAILED if failed else ExitCode.OK


def run_verify_job(conf: Config) -> int:
    """`trackerbackup run verify`: the newest backup of every enabled type (and, with an
    [offsite] repository, the repository and one sampled off-site backup), with pings."""
    runner.ping(conf.monitoring.ping_start, None)
    status = cmd_verify(conf, argparse.Namespace(type=None, id=None, latest=True, all=False,
                                                 offsite=conf.offsite.enabled))
    if status == ExitCode.OK:
        runner.ping(conf.monitoring.ping_success, None)
    else:
        runner.ping(conf.monitoring.ping_failure, "trackerbackup verify: a backup failed")
    return status


def _enabled_types(conf: Config) -> tuple[str, ...]:
    return tuple(t for t in NAMES if conf.type(t).enabled)


def _verify_type(conf: Config, backup_type: str, args: argparse.Namespace) -> list[Verified]:
    backups = Repository(conf.general.backup_dir).backups(backup_type)
    if args.id:
        backups = [b for b in backups if b.id == args.id]
        if not backups:
            raise UsageError(f"no {backup_type} backup with id {args.id}",
                             hint=f"'trackerbackup list {backup_type}' shows the ids")
    elif not args.all:
        backups = backups[:1]
    docker = Docker(conf.general.docker)
    outcomes = []
    for backup in backups:
        stored = StoredBackup(backup.path, backup.manifest)
        outcomes.append(verify_backup(stored, source_kind(stored.manifest.kind, conf, docker)))
    if outcomes and conf.monitoring.textfile_dir is not None and not args.id:
        newest = outcomes[0].record
        monitoring.write_verify_textfile(conf.monitoring.textfile_dir, backup_type,
                                         ok=newest.ok, verified_at=newest.verified_at)
    return outcomes


def _print_verified(outcome: Verified) -> None:
    manifest, record = outcome.backup.manifest, outcome.record
    print(f"{manifest.type} {manifest.id}: {'ok' if record.ok else 'FAILED'}")
    for check in record.checks:
        print(f"  {check}")
    if record.problem:
        print(f"  problem: {record.problem}")


def cmd_restore(conf: Config, args: argparse.Namespace) -> int:
    options = RestoreOptions(
        backup_type=args.type, backup_id=None if args.latest else args.id,
        target=Path(args.target).absolute() if args.target else None,
        target_text=args.target,
        in_place=args.in_place, only=tuple(args.only), critical_mode=args.critical_mode,
        dry_run=args.dry_run,
        yes=args.yes, force=args.force, safety_copy=args.safety_copy)
    fetch = cli_offsite.offsite_fetch(args.host) if args.origin == "offsite" else local_backup
    steps = restore(conf, Docker(conf.general.docker), options, ask=_ask_on_terminal(),
                    say=_say, fetch=fetch)
    if args.dry_run:
        print("restore would, in this order:")
        for number, step in enumerate(steps, 1):
            consent = "  (asks first unless --yes)" if step.consent else ""
            print(f"  {number}. {step.description}{consent}")
    else:
        print("restore finished")
    return ExitCode.OK


def _say(line: str) -> None:
    print(line, flush=True)  # each step as it starts, also into a pipe


def _ask_on_terminal() -> Any:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        return None

    def ask(question: str) -> bool:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")

    return ask
