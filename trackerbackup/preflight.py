"""What a run needs from its surroundings, checked before it writes anything.

`run` refuses what would make a backup unsafe (a configuration file others may change or
read while it holds secrets, too little disk space); `check` reports the same things
and what only the systemd unit would meet (a backup_dir it may not write).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from trackerbackup import lock, unit
from trackerbackup.config import SECRET_KEYS, Config
from trackerbackup.errors import ConfigError, EnvironmentProblem, TrackerBackupError
from trackerbackup.repository import FIX_BACKUP_DIR
from trackerbackup.safefs import check_ancestors, disk_problem, private_dir


@dataclass(frozen=True)
class Finding:
    """A problem `check` reports (exit 3), or a warning (`problem` false)."""

    message: str
    problem: bool = True


def secrets_in(conf: Config) -> list[str]:
    """The configuration keys that hold a secret (a ping URL carries its check's token)."""
    return [key for key in sorted(SECRET_KEYS)
            if getattr(getattr(conf, key.split(".")[0]), key.split(".")[1], "")]


def config_exposure(conf: Config) -> tuple[ConfigError | None, ConfigError | None]:
    """(what makes the file unsafe to obey, what makes its secrets readable by others).
    `run` refuses either; `check` reports the first as a problem, the second as a warning."""
    path = Path(conf.source)
    try:
        info = os.stat(path)
    except OSError:
        return None, None  # read moments ago: the file was replaced, the next run sees it
    mode = stat.S_IMODE(info.st_mode)
    unsafe = None
    if info.st_uid not in (0, os.geteuid()):
        unsafe = f"owned by uid {info.st_uid}, who could make root run any program"
    elif mode & (stat.S_IWGRP | stat.S_IWOTH):
        unsafe = f"writable by other users (mode {mode:04o}): they could make root run any program"
    exposed = None
    secrets = secrets_in(conf)
    if secrets and mode & (stat.S_IRGRP | stat.S_IROTH):
        exposed = (f"readable by other users (mode {mode:04o}) while it holds secrets "
                   f"({', '.join(secrets)})")
    return (_config_error(conf.source, unsafe, "chown root:root"),
            _config_error(conf.source, exposed, "chmod 600"))


def _config_error(source: str, problem: str | None, fix: str) -> ConfigError | None:
    if problem is None:
        return None
    error = ConfigError(source, [f"the file is {problem}"])
    error.hint = f"{fix} {source} (and chmod 600 if it holds secrets)"
    return error


def refuse_unsafe_config(conf: Config) -> None:
    for error in config_exposure(conf):
        if error is not None:
            raise error


def check_free_space(directory: Path, needed: int, head_room: int, *,
                     what: str = "the backup",
                     hint: str = "free space there, lower retention, or point "
                                 "general.backup_dir elsewhere") -> None:
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError as error:
        raise disk_problem(error, "check free space", probe) from error
    if free < needed + head_room:
        raise EnvironmentProblem(
            f"not enough free space: {what} needs about {needed:,} bytes"
            f" (+{head_room:,} head room), {free:,} are free",
            op="check free space", path=str(directory), hint=hint)


def check_findings(conf: Config, backup_types: tuple[str, ...],
                   unit_dirs: tuple[Path, ...] = unit.UNIT_DIRS) -> list[Finding]:
    """Everything `check` reports beyond the configuration and the sources."""
    findings: list[Finding] = []
    unsafe, exposed = config_exposure(conf)
    findings += [Finding(str(unsafe))] if unsafe else []
    findings += [Finding(str(exposed), problem=False)] if exposed else []
    findings += _backup_dir_findings(conf.general.backup_dir)
    findings += _run_dir_findings(conf.general.run_dir)
    findings += _findings(check_free_space, conf.general.backup_dir, 0,
                          conf.general.min_free_bytes)
    findings += list(_unit_findings(conf, backup_types, unit_dirs))
    return findings


def _findings(check: Callable[..., None], *args: object) -> list[Finding]:
    try:
        check(*args)
    except TrackerBackupError as error:
        return [Finding(str(error))]
    return []


def _backup_dir_findings(backup_dir: Path) -> list[Finding]:
    """The directory is safe to use (or can be created) and a file can be written in it."""
    try:
        check_ancestors(backup_dir, "general.backup_dir")
        found = private_dir(backup_dir, create=False, what="general.backup_dir",
                            fix=FIX_BACKUP_DIR)
    except TrackerBackupError as error:
        return [Finding(str(error))]
    findings = []
    if found.exists:
        mode = stat.S_IMODE(os.lstat(backup_dir).st_mode)
        if mode != 0o700:
            findings.append(Finding(f"general.backup_dir {backup_dir} has mode {mode:04o}: "
                                    "the next run tightens it to 0700", problem=False))
    return findings + _findings(_probe_write, backup_dir, found.exists)


def _run_dir_findings(run_dir: Path) -> list[Finding]:
    """The run directory's safety (lock.private_run_dir); missing is fine, as the unit's
    RuntimeDirectory= and the tmpfiles entry create it."""
    try:
        lock.private_run_dir(run_dir, create=False)
    except TrackerBackupError as error:
        return [Finding(str(error))]
    return []


def _probe_write(backup_dir: Path, exists: bool) -> None:
    """Create and remove a hidden file in backup_dir (or check the parent it would be
    created in): the only sure test of a read-only mount, a full quota or a lost ACL."""
    try:
        if exists:
            fd, name = tempfile.mkstemp(prefix=".check-", dir=backup_dir)
            os.close(fd)
            os.unlink(name)
            return
        parent = backup_dir.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not os.access(parent, os.W_OK):
            raise PermissionError(13, f"cannot create {backup_dir} in {parent}", str(parent))
    except OSError as error:
        raise disk_problem(error, "write in general.backup_dir", backup_dir) from error


def _unit_findings(conf: Config, backup_types: tuple[str, ...],
                   unit_dirs: tuple[Path, ...]) -> Iterator[Finding]:
    directories = {"general.backup_dir": conf.general.backup_dir,
                   "general.run_dir": conf.general.run_dir}
    if conf.monitoring.textfile_dir is not None:
        directories["monitoring.textfile_dir"] = conf.monitoring.textfile_dir
    refused: dict[tuple[str, tuple[str, str]], list[str]] = {}
    for backup_type in backup_types:
        sandbox = unit.sandbox(backup_type, unit_dirs)
        for key, path in directories.items():
            refusal = sandbox.refusal(path) if sandbox else None
            if refusal:
                refused.setdefault((key, refusal), []).append(backup_type)
    for (key, (why, fix)), types in refused.items():
        units = ", ".join(f"trackerbackup@{t}.service" for t in types)
        yield Finding(f"{key} {directories[key]}: {units}: {why}\n  hint: {fix}")
