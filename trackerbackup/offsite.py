"""The off-site repository: the only module that runs restic (through `execute`).

restic gets its repository, password and backend credentials through its environment
only (RESTIC_REPOSITORY, RESTIC_PASSWORD_FILE, the environment_file's variables): no
secret is ever in an argv, so none shows in /proc/*/cmdline, the journal or a manifest.
The environment is built from scratch, so a RESTIC_PASSWORD inherited from a shell
cannot override the configured file.

Layout in the repository (docs/offsite.md): an archive backup is one snapshot of its
staged tree with its manifest (`part=tree`, offsite_tree.py); any other backup is one
snapshot per artifact (`part=data`, the raw content streamed with --stdin) and one holding
its manifest (`part=manifest`, pushed last). The `tree` and `manifest` snapshots are the
off-site commit markers. All are tagged `trackerbackup`, `type=`, `id=`, `version=`, and
`--host` the tracker's host name.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from trackerbackup import __version__, execute
from trackerbackup.config import Config
from trackerbackup.config_offsite import Offsite
from trackerbackup.errors import BackupFailed, ConfigError, UsageError
from trackerbackup.execute import CommandFailed
from trackerbackup.log import Event, fields, get_logger
from trackerbackup.safefs import NotARegularFile, read_small_file

log = get_logger()

TAG = "trackerbackup"
DATA, MANIFEST, TREE = "data", "manifest", "tree"
_ENV_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
MAX_SECRET_FILE_BYTES = 64 << 10


class OffsiteFailed(BackupFailed):
    """A restic command failed: the local backups are untouched (exit 1)."""


class OffsiteStorageFull(OffsiteFailed):
    """The repository's storage refused a write: full, or a quota (exit 1)."""


# What restic prints when the storage is full: a local path or mount, rest-server (507),
# a quota; OpenSSH's sftp server answers a write on a full disk with a bare
# SSH_FX_FAILURE, which restic prints as `Write: sftp: "Failure"`.
STORAGE_FULL = ("no space left on device", "insufficient storage", "quota exceeded",
                "disk quota", 'write: sftp: "failure"')


# ------------------------------------------------------------------ the secret files


def secret_file_problems(offsite: Offsite) -> list[str]:
    """Why password_file or environment_file may not be used: each must be a regular
    file of root's (or this user's) that nobody else can read or write."""
    problems = []
    for key, path in (("offsite.password_file", offsite.password_file),
                      ("offsite.environment_file", offsite.environment_file)):
        if path is None:
            continue
        try:
            info = os.lstat(path)
        except OSError as error:
            problems.append(f"{key}: {path}: {error.strerror}")
            continue
        mode = stat.S_IMODE(info.st_mode)
        if not stat.S_ISREG(info.st_mode):
            problems.append(f"{key}: {path} is not a regular file")
        elif info.st_uid not in (0, os.geteuid()):
            problems.append(f"{key}: {path} is owned by uid {info.st_uid}, not root: "
                            f"chown root:root {path}")
        elif mode & 0o077:
            problems.append(f"{key}: {path} has mode {mode:04o}, others may read or change "
                            f"it: chmod 600 {path}")
    return problems


def refuse_unsafe_files(conf: Config) -> None:
    problems = secret_file_problems(conf.offsite)
    if problems:
        raise ConfigError(conf.source, problems)


def read_environment_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines ('export ' and one pair of quotes allowed; # comments)."""
    try:
        text = read_small_file(path, MAX_SECRET_FILE_BYTES).decode("utf-8")
    except (OSError, NotARegularFile, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read offsite.environment_file: {error}", path=str(path),
                         hint="KEY=VALUE lines, UTF-8, a root-only regular file") from error
    variables = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _ENV_LINE.match(line)
        if match is None:  # never quote the line: it may hold a key
            raise UsageError(f"line {number} is not KEY=VALUE", path=str(path),
                             op="read offsite.environment_file")
        value = match[2]
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        variables[match[1]] = value
    return variables


# ------------------------------------------------------------------ snapshots


@dataclass(frozen=True)
class Snapshot:
    id: str
    host: str
    tags: dict[str, str]
    paths: tuple[str, ...]

    @property
    def backup_id(self) -> str:
        return self.tags.get("id", "")

    @property
    def part(self) -> str:
        return self.tags.get("part", "")


@dataclass
class OffsiteBackup:
    """One local backup as the repository holds it: its snapshots by part."""

    type: str
    id: str
    host: str
    manifest: Snapshot | None = None  # the commit marker: a `manifest` or a `tree` snapshot
    data: list[Snapshot] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.manifest is not None

    @property
    def snapshots(self) -> list[Snapshot]:
        return [*self.data, *([self.manifest] if self.manifest else [])]


def _snapshot(item: dict[str, Any]) -> Snapshot:
    tags = {}
    for tag in item.get("tags") or ():
        key, _, value = str(tag).partition("=")
        tags[key] = value
    return Snapshot(id=str(item["id"]), host=str(item.get("hostname", "")), tags=tags,
                    paths=tuple(str(p) for p in item.get("paths") or ()))


def group(snapshots: list[Snapshot]) -> list[OffsiteBackup]:
    """Snapshots by (host, type, id), oldest backup first."""
    found: dict[tuple[str, str, str], OffsiteBackup] = {}
    for snap in snapshots:
        key = (snap.host, snap.tags.get("type", ""), snap.backup_id)
        entry = found.setdefault(key, OffsiteBackup(key[1], key[2], key[0]))
        if snap.part in (MANIFEST, TREE):
            entry.manifest = snap
        else:
            entry.data.append(snap)
    return sorted(found.values(), key=lambda b: (b.host, b.type, b.id))


# ------------------------------------------------------------------ restic


class Restic:
    """restic against the configured repository. Every method checks restic's exit status
    and raises OffsiteFailed with the cause and the fix."""

    def __init__(self, conf: Config) -> None:
        self.settings = conf.offsite
        if not self.settings.enabled:
            raise UsageError("no off-site repository is configured",
                             hint=f"set [offsite] repository and password_file in {conf.source}")
        refuse_unsafe_files(conf)
        extra = (read_environment_file(self.settings.environment_file)
                 if self.settings.environment_file else {})
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            **extra,
            "RESTIC_REPOSITORY": self.settings.repository,
            "RESTIC_PASSWORD_FILE": str(self.settings.password_file),
        }
        if os.environ.get("CACHE_DIRECTORY"):  # systemd's CacheDirectory=
            self.env["RESTIC_CACHE_DIR"] = os.environ["CACHE_DIRECTORY"].split(":")[0]
        self.secrets = [value for value in extra.values() if len(value) >= 4]

    def _argv(self, *args: str) -> list[str]:
        options = [item for option in self.settings.options for item in ("-o", option)]
        return [self.settings.restic, *options, *args]

    def _run(self, op: str, *args: str) -> bytes:
        try:
            return execute.run(self._argv(*args), op=op, secrets=self.secrets, env=self.env,
                               timeout=self.settings.timeout).stdout
        except CommandFailed as error:
            raise failure(error, op) from error

    def init(self) -> None:
        self._run("create the off-site repository", "init", "--repository-version", "2")

    def snapshots(self, *, host: str | None, backup_type: str | None = None) -> list[Snapshot]:
        tags = ",".join([TAG, *([f"type={backup_type}"] if backup_type else [])])
        args = ["snapshots", "--json", "--tag", tags, *(["--host", host] if host else [])]
        output = self._run("list the off-site snapshots", *args)
        try:
            return [_snapshot(item) for item in json.loads(output or b"[]")]
        except (ValueError, KeyError, TypeError) as error:
            raise OffsiteFailed(f"restic printed no snapshot list: {error}",
                                op="list the off-site snapshots") from error

    def backup(self, source: IO[bytes], name: str, host: str, tags: dict[str, str]) -> str:
        """Stream `source` into a new snapshot holding one file `name`; its id."""
        op = f"push {name} off-site"
        argv = self._argv("backup", "--stdin", "--stdin-filename", name, "--host", host,
                          "--json", "--quiet", "--tag", TAG,
                          *(item for k, v in tags.items() for item in ("--tag", f"{k}={v}")))
        try:
            output = execute.feed(argv, source, op=op, secrets=self.secrets, env=self.env,
                                  timeout=self.settings.timeout).stdout
        except CommandFailed as error:
            raise failure(error, op) from error
        return _snapshot_id(output, op)

    def backup_tree(self, directory: Path, host: str, tags: dict[str, str]) -> str:
        """A new snapshot of `directory` (restic's parent: the last one of this host and
        path, so unchanged files cost nothing); its id."""
        op = f"push {directory} off-site"
        output = self._run(op, "backup", str(directory), "--host", host, "--json", "--quiet",
                           "--tag", TAG,
                           *(item for k, v in tags.items() for item in ("--tag", f"{k}={v}")))
        return _snapshot_id(output, op)

    def restore(self, snapshot: str, target: Path) -> None:
        """The snapshot's files under `target` (at their absolute paths)."""
        self._run(f"fetch off-site snapshot {snapshot[:8]}", "restore", snapshot,
                  "--target", str(target))

    def dump(self, snapshot: str, name: str, sink: Callable[[bytes], object]) -> None:
        op = f"fetch {name} from off-site snapshot {snapshot[:8]}"
        try:
            execute.drain(self._argv("dump", snapshot, "/" + name), sink, op=op,
                          secrets=self.secrets, env=self.env, timeout=self.settings.timeout)
        except CommandFailed as error:
            raise failure(error, op) from error

    def forget(self, snapshot_ids: list[str], *, prune: bool) -> None:
        self._run("forget off-site snapshots", "forget", *(["--prune"] if prune else []),
                  *snapshot_ids)

    def check(self, read_data_subset: str) -> str:
        return self._run("check the off-site repository", "check", "--read-data-subset",
                         read_data_subset).decode("utf-8", "replace")

    def unlock_stale(self) -> None:
        """`restic unlock` without --remove-all removes only locks restic proves stale:
        older than 30 minutes (live locks are refreshed every 5), or made on this machine
        by a process that no longer exists. A live lock of another host stays."""
        self._run("remove stale off-site locks", "unlock")


def _snapshot_id(output: bytes, op: str) -> str:
    for line in reversed(output.decode("utf-8", "replace").splitlines()):
        if '"summary"' in line:
            return str(json.loads(line).get("snapshot_id", ""))
    raise OffsiteFailed("restic reported no snapshot", op=op)


def failure(error: CommandFailed, op: str) -> OffsiteFailed:
    """restic's error, with the fix for the causes operators meet."""
    tail = error.stderr_tail
    hints = (
        ("wrong password", "offsite.password_file does not hold this repository's "
         "password"),
        ("Is there a repository at the following location", "create the repository with "
         "'trackerbackup offsite init', or fix offsite.repository"),
        ("repository does not exist", "create the repository with 'trackerbackup offsite "
         "init', or fix offsite.repository"),
        ("already locked", "another restic process holds the repository lock: a live one "
         "(wait), or one restic cannot prove stale (see docs/offsite.md, Locks)"),
        ("timed out", "the repository did not answer within offsite.timeout: check the "
         "network and the server"),
    )
    message = f"restic failed (exit {error.returncode}): {_cause(tail)}"
    if any(needle in tail.lower() for needle in STORAGE_FULL):
        return OffsiteStorageFull(
            f"the off-site storage is full: {message}", op=op,
            hint="the off-site storage is full (or over a quota): run 'trackerbackup "
                 "offsite prune', check the server's free space, or grow it; the local "
                 "backups are intact and the next run pushes what is missing")
    hint = next((text for needle, text in hints if needle.lower() in tail.lower()),
                "check the network, the server and [offsite] in the configuration; the "
                "local backups are intact")
    return OffsiteFailed(message, op=op, hint=hint)


def _cause(stderr: str) -> str:
    """restic's error without the Go stack traces it prints after an unexpected one
    (lines of file:line and function names), at most 1500 characters from the end."""
    lines = [line for line in stderr.strip().splitlines()
             if not line.startswith(("\t", "github.com/", "main.", "runtime.", "runtime/"))]
    return "\n".join(lines)[-1500:]


def is_lock_failure(error: OffsiteFailed) -> bool:
    """A lock held by another restic, not a lock file that could not be written."""
    return "already locked" in error.message


def with_stale_locks_removed(restic: Restic, action: Callable[[], Any]) -> Any:
    """Run `action`; if a lock refused it, remove the locks restic proves stale (a killed
    push) and try once more."""
    try:
        return action()
    except OffsiteFailed as error:
        if not is_lock_failure(error):
            raise
    restic.unlock_stale()
    log.warning("removed stale off-site locks (restic unlock) and retried",
                extra=fields(Event.OFFSITE_LOCK_REMOVED))
    return action()


def push_tags(backup_type: str, backup_id: str, part: str) -> dict[str, str]:
    return {"type": backup_type, "id": backup_id, "version": __version__, "part": part}


def iter_parts(backups: list[OffsiteBackup]) -> Iterator[Snapshot]:
    for backup in backups:
        yield from backup.snapshots
