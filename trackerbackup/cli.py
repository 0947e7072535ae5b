"""The command line: parse, dispatch to one function per sub-command, map errors to exit codes.

Exit codes (documented in README.md and trackerbackup(8)): 0 success, 1 backup failed,
2 usage or configuration error, 3 environment problem, 75 the type's lock is held.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import NoReturn

from trackerbackup import (
    __version__,
    cli_offsite,
    cli_restore,
    config,
    execute,
    freeze,
    lock,
    log,
    monitoring,
    preflight,
    runner,
)
from trackerbackup.backup_types import NAMES, VERIFY_JOB
from trackerbackup.config import SECRET_KEYS, Config
from trackerbackup.docker import Docker
from trackerbackup.errors import (
    BackupFailed,
    ConfigError,
    ExitCode,
    LockBusy,
    TrackerBackupError,
    UsageError,
)
from trackerbackup.inplace import interrupted_restores
from trackerbackup.log import Event, fields
from trackerbackup.manifest import read_verification
from trackerbackup.repository import Repository
from trackerbackup.safefs import disk_problem
from trackerbackup.sources import Plan
from trackerbackup.sources.database import enable_wal

logger = log.get_logger()


class Terminated(BackupFailed):
    """SIGTERM (systemctl stop) arrived: unwind through every `finally`, record a failure."""


def _raise_terminated(signum: int, frame: FrameType | None) -> NoReturn:
    raise Terminated(f"stopped by signal {signal.Signals(signum).name}", op="run",
                     hint="the run was aborted; nothing was recorded as a backup")


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise UsageError(message, hint=f"see '{self.prog} --help'")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="trackerbackup",
                    description="Consistent, verified backups of a Torrust Tracker host.")
    parser.add_argument("--version", action="version", version=f"trackerbackup {__version__}")
    parser.add_argument("--config", type=Path, default=None,
                        help=f"configuration file (default: ${config.ENV_VAR} or "
                        f"{config.DEFAULT_PATH})")
    parser.add_argument("--log-target", choices=("auto", "journal", "console"), default="auto",
                        help="auto: the journal under systemd, else the terminal")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=Parser)

    run = commands.add_parser("run", help="run one backup now")
    run.add_argument("type", metavar="TYPE", help=f"one of: {', '.join(NAMES)}")
    run.add_argument("--dry-run", action="store_true", help="show what would be backed up")
    run.add_argument("--force", action="store_true",
                     help="run even if the type is disabled in the configuration")
    run.add_argument("--wait", action="store_true",
                     help="wait for a running backup of the same type instead of exiting 75")

    listing = commands.add_parser("list", help="list committed backups")
    listing.add_argument("type", metavar="TYPE", nargs="?", help="only this type")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.add_argument("--offsite", action="store_true",
                         help="the off-site repository's backups (of this host)")
    cli_offsite.add_list_options(listing)

    prune = commands.add_parser("prune", help="apply the retention policy")
    prune.add_argument("type", metavar="TYPE", nargs="?", help="only this type")
    prune.add_argument("--dry-run", action="store_true",
                       help="list every backup with keep/delete and the rule that decided")

    check = commands.add_parser("check", help="validate configuration and environment")
    check.add_argument("type", metavar="TYPE", nargs="?", help="only this type")

    sqlite_cmd = commands.add_parser("sqlite", help="SQLite maintenance")
    sqlite_actions = sqlite_cmd.add_subparsers(dest="sqlite_action", required=True,
                                               metavar="ACTION", parser_class=Parser)
    sqlite_actions.add_parser("enable-wal", help="switch the tracker's database to WAL mode "
                              "(stops the tracker for a moment, then restores its state)")

    commands.add_parser("recover", help="thaw a tracker container an interrupted run left "
                        "paused or stopped (the service's ExecStopPost)")
    failure = commands.add_parser("notify-failure",
                                  help="record a failed unit (the OnFailure= unit)")
    failure.add_argument("type", metavar="TYPE")
    cli_restore.add_parsers(commands)
    cli_offsite.add_parsers(commands)
    return parser


def _types(selected: str | None) -> tuple[str, ...]:
    if selected is None:
        return NAMES
    return (_known_type(selected),)


def _known_type(name: str) -> str:
    if name not in NAMES:
        raise UsageError(f"unknown backup type '{name}'",
                         hint=f"use one of: {', '.join(NAMES)}")
    return name


def cmd_run(conf: Config, args: argparse.Namespace) -> int:
    if args.type == VERIFY_JOB:
        return cli_restore.run_verify_job(conf)
    backup_type = _known_type(args.type)
    runner.require_available(backup_type)  # before `enabled`: a type that cannot run exits 2
    if not conf.type(backup_type).enabled and not args.force:
        logger.info("the %s backup is disabled ([%s] enabled = false in %s): skipped; "
                    "use 'trackerbackup run --force %s' to run it anyway",
                    backup_type, backup_type, conf.source, backup_type,
                    extra=fields(type=backup_type))
        return ExitCode.OK
    outcome = runner.run(conf, backup_type, dry_run=args.dry_run, wait=args.wait)
    if outcome.backup is None:
        _print_plan(backup_type, outcome.plan)
        return ExitCode.OK
    print(f"{backup_type} backup {outcome.backup.id}: {outcome.backup.size:,} bytes, verified")
    print(f"  {outcome.backup.path}")
    for backup_id in outcome.pruned:
        print(f"  pruned {backup_id}")
    return ExitCode.OK


def _print_plan(label: str, plan: Plan) -> None:
    print(f"{label}: would back up (about {plan.estimated_bytes:,} bytes):")
    for item in plan.items:
        print(f"  {item}")
    for key, value in plan.details.items():
        if value and key != "missing":
            print(f"  {key}: {value}")
    for warning in plan.warnings:
        print(f"  warning: {warning}")


def cmd_list(conf: Config, args: argparse.Namespace) -> int:
    if args.offsite:
        return cli_offsite.cmd_list_offsite(conf, args)
    repository = Repository(conf.general.backup_dir)
    backups = []
    for backup_type in _types(args.type):
        found, ignored = repository.scan(backup_type)
        backups += found
        runner.log_ignored(ignored, backup_type)
    if args.json:
        print(json.dumps([b.summary() for b in backups], indent=2))
        return ExitCode.OK
    if not backups:
        print(f"no backups in {conf.general.backup_dir}")
        return ExitCode.OK
    print(f"{'TYPE':<10} {'ID':<26} {'SIZE':>14} {'VERIFIED':<8} {'LAST VERIFY':<24} WARNINGS")
    for backup in backups:
        print(f"{backup.type:<10} {backup.id:<26} {backup.size:>14,} "
              f"{'yes' if backup.verified else 'NO':<8} {_last_verify(backup.path):<24} "
              f"{len(backup.warnings)}")
        for problem in backup.problems:
            print(f"  {problem}")
    return ExitCode.OK


def _last_verify(path: Path) -> str:
    try:
        record = read_verification(path)
    except TrackerBackupError:
        return "unreadable record"
    if record is None:
        return "never"
    stamp = record.verified_at.strftime("%Y-%m-%d %H:%M")
    return f"{stamp} {'ok' if record.ok else 'FAILED'}"


def cmd_prune(conf: Config, args: argparse.Namespace) -> int:
    repository = Repository(conf.general.backup_dir)
    for backup_type in _types(args.type):
        with lock.hold(conf.general.run_dir, backup_type, wait=False):
            runner.log_ignored(repository.scan(backup_type)[1], backup_type)
            decisions = runner.prune(conf, backup_type, repository, dry_run=args.dry_run)
        verb = ("would delete", "would keep") if args.dry_run else ("deleted", "kept")
        for decision in decisions:
            print(f"{backup_type:<10} {decision.backup.id:<26} "
                  f"{verb[1] if decision.keep else verb[0]:<13} {', '.join(decision.reasons)}")
    return ExitCode.OK


def cmd_check(conf: Config, args: argparse.Namespace) -> int:
    """Exit 2 if an enabled type cannot run (this version lacks it, or the configuration
    asks for what it cannot do), 3 if the environment is not ready, else 0."""
    print(f"configuration {conf.source}: valid")
    docker = Docker(conf.general.docker)
    unusable = False
    environment = _print_ping_problems(conf) > 0
    for message in interrupted_restores(conf.general.backup_dir):
        environment = True
        print(f"PROBLEM: {message}")
    for backup_type in _types(args.type):
        enabled = conf.type(backup_type).enabled
        label = f"{backup_type} ({'enabled' if enabled else 'disabled'})"
        try:
            plan = runner.make_source(conf, backup_type, docker).plan()
        except UsageError as error:
            unusable = unusable or enabled
            print(f"{label}: PROBLEM: {error}" if enabled else f"{label}: {error.message}")
            continue
        except TrackerBackupError as error:
            environment = True
            print(f"{label}: PROBLEM: {error}")
            continue
        _print_plan(label, plan)
    for finding in preflight.check_findings(conf, _types(args.type)):
        environment = environment or finding.problem
        print(f"{'PROBLEM' if finding.problem else 'warning'}: {finding.message}")
    environment = cli_offsite.check_offsite(conf) or environment
    if unusable:
        return ExitCode.USAGE
    return ExitCode.ENVIRONMENT if environment else ExitCode.OK


def _print_ping_problems(conf: Config) -> int:
    problems = 0
    for key in sorted(k for k in SECRET_KEYS if k.startswith("monitoring.")):
        url = getattr(conf.monitoring, key.removeprefix("monitoring."))
        problem = monitoring.url_problem(url) if url else None
        if problem:
            problems += 1
            print(f"PROBLEM: {key} ({monitoring.mask_url(url)}): {problem}")
    return problems


def cmd_sqlite(conf: Config, args: argparse.Namespace) -> int:
    path = enable_wal(conf, Docker(conf.general.docker))
    print(f"{path} is in WAL mode: snapshots no longer block the tracker's writers")
    return ExitCode.OK


def cmd_recover(conf: Config, args: argparse.Namespace) -> int:
    thawed = freeze.recover(Docker(conf.general.docker), conf.general.run_dir)
    for name in thawed:
        print(f"thawed container {name}")
    return ExitCode.OK


def cmd_notify_failure(conf: Config, args: argparse.Namespace) -> int:
    backup_type = args.type
    unit = f"trackerbackup@{backup_type}.service"
    extra = fields(Event.UNIT_FAILED, type=backup_type)
    # Shown by `journalctl -u <unit>` too, next to the run's own records.
    extra["journal"]["OBJECT_SYSTEMD_UNIT"] = unit
    logger.error("%s failed; see journalctl -u %s", unit, unit, extra=extra)
    # Metrics are left alone: the run itself recorded its failure (with its duration) unless
    # it was killed, and then the last-success timestamp ageing is what alerts.
    tail = _journal_tail(unit)
    runner.ping(conf.monitoring.ping_failure, tail or f"{unit} failed")
    if conf.monitoring.failure_command:
        _run_failure_command(conf.monitoring.failure_command, backup_type, unit, tail)
    return ExitCode.OK


def _journal_tail(unit: str, lines: int = 50) -> str:
    try:
        result = execute.run(("journalctl", "--unit", unit, "--lines", str(lines),
                              "--no-pager", "--output", "short-iso"), op="read the unit's log",
                             timeout=30)
    except (OSError, TrackerBackupError):
        return ""
    return result.stdout.decode("utf-8", "replace")


def _run_failure_command(command: Sequence[str], backup_type: str, unit: str,
                         tail: str) -> None:
    env = {**os.environ, "TRACKERBACKUP_TYPE": backup_type, "TRACKERBACKUP_UNIT": unit}
    try:
        execute.run(command, op="run monitoring.failure_command", env=env,
                    input_bytes=tail.encode(), timeout=300)
    except (OSError, TrackerBackupError) as error:
        logger.warning("monitoring.failure_command failed: %s", error,
                       extra=fields(type=backup_type))


COMMANDS: dict[str, Callable[[Config, argparse.Namespace], int]] = {
    "run": cmd_run,
    "list": cmd_list,
    "prune": cmd_prune,
    "check": cmd_check,
    "sqlite": cmd_sqlite,
    "recover": cmd_recover,
    "notify-failure": cmd_notify_failure,
    "verify": cli_restore.cmd_verify,
    "restore": cli_restore.cmd_restore,
    "offsite": cli_offsite.cmd_offsite,
}

EVENT_BY_ERROR: dict[type[TrackerBackupError], Event] = {
    ConfigError: Event.CONFIG_INVALID,
    LockBusy: Event.LOCK_BUSY,
}


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        args = build_parser().parse_args(argv)
    except UsageError as error:
        print(f"trackerbackup: {error}", file=sys.stderr)
        return ExitCode.USAGE
    log.setup(args.log_target, args.verbose)
    conf: Config | None = None
    try:
        conf = config.load(args.config or config.default_path())
        return COMMANDS[args.command](conf, args)
    except TrackerBackupError as error:
        _log_error(error, getattr(args, "type", None))
        return error.exit_code
    except OSError as error:  # a path or disk problem no layer named: a message, not a trace
        problem = disk_problem(error, f"trackerbackup {args.command}",
                               backup_dir=conf.general.backup_dir if conf else None)
        _log_error(problem, getattr(args, "type", None))
        return problem.exit_code
    except KeyboardInterrupt:
        logger.error("interrupted")
        return ExitCode.BACKUP_FAILED


def _log_error(error: TrackerBackupError, backup_type: str | None) -> None:
    if error.logged:
        return
    event = next((e for cls, e in EVENT_BY_ERROR.items() if isinstance(error, cls)), None)
    logger.error("%s", error, extra=fields(event, type=backup_type, path=error.path,
                                           exit_code=int(error.exit_code)))
