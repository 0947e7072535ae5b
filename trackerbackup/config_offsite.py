"""The `[offsite]` table of the configuration (see config.py for how tables are declared):
where restic copies every backup, with what credentials, and what it keeps."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from trackerbackup.backup_types import BY_NAME
from trackerbackup.retention import RetentionPolicy
from trackerbackup.schema import setting


def _absolute_path(path: str) -> str | None:
    return None if Path(path).is_absolute() else "expected an absolute path"


def _known_types(types: tuple[str, ...]) -> str | None:
    unknown = [name for name in types if name not in BY_NAME]
    if unknown:
        return f"unknown type(s) {', '.join(unknown)}: use any of {', '.join(BY_NAME)}"
    return None


def _extended_options(options: tuple[str, ...]) -> str | None:
    if any("=" not in option for option in options):
        return "each option is key=value (restic -o), e.g. \"sftp.connections=2\""
    return None


@dataclass(frozen=True)
class Offsite:
    repository: str = setting(
        "", "The restic repository that receives a copy of every backup (any restic "
        "repository string: a local path, sftp:user@host:/path, rest:https://host/, "
        "s3:...); empty: off. It reaches restic through its environment "
        "(RESTIC_REPOSITORY), never a command line; still, put credentials into "
        "environment_file, not here. Several hosts may share one repository (docs/offsite.md).")
    password_file: Path | None = setting(
        None, "The file holding the repository's password (RESTIC_PASSWORD_FILE); required "
        "when repository is set. Owned by root, mode 0600 (check and run refuse otherwise). "
        "Without it the off-site copies cannot be read: keep a copy apart from the host.")
    environment_file: Path | None = setting(
        None, "Optional KEY=VALUE lines handed to restic's environment: backend credentials "
        "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, B2_ACCOUNT_KEY, ...). Root, 0600.")
    host: str = setting(
        "", "The host name this tracker's snapshots carry (restic --host), which keeps the "
        "hosts sharing a repository apart; empty: this machine's host name. Set it to the "
        "old name on a replacement VM that takes over a tracker.")
    types: tuple[str, ...] = setting(
        (), "The backup types copied off-site after each run; empty: every enabled type.",
        check=_known_types)
    options: tuple[str, ...] = setting(
        (), "restic extended options (-o key=value), e.g. [\"sftp.command=ssh -i "
        "/root/.ssh/offsite backup@host -s sftp\"]. They appear in the process list: no "
        "secrets here.", check=_extended_options)
    restic: str = setting("/usr/bin/restic", "The restic program (Debian: restic, 0.14 or "
                          "later).", check=_absolute_path)
    timeout: int = setting(
        3600, "Longest time, in seconds, one restic command may take (a push, a prune); a "
        "stalled network fails the run instead of hanging it.", minimum=10, maximum=86_400)
    # Off-site retention, per host and type, by the local rules (trackerbackup.retention).
    keep_last: int = setting(
        7, "'trackerbackup offsite prune' keeps this host's N newest off-site backups of each "
        "type (the newest one is never deleted; other hosts' snapshots are never touched).",
        minimum=0, maximum=10_000)
    keep_daily: int = setting(14, "And the newest of each of the last N days (UTC).",
                              minimum=0, maximum=36_500)
    keep_weekly: int = setting(8, "And the newest of each of the last N ISO weeks.",
                               minimum=0, maximum=5_200)
    keep_monthly: int = setting(12, "And the newest of each of the last N months.",
                                minimum=0, maximum=1_200)
    max_age_days: int = setting(0, "Then delete off-site backups that started more than N "
                                "days before the newest verified one (as a type's "
                                "max_age_days); 0: no age limit.", minimum=0, maximum=36_500)

    @property
    def retention(self) -> RetentionPolicy:
        return RetentionPolicy(keep_last=self.keep_last, keep_daily=self.keep_daily,
                               keep_weekly=self.keep_weekly, keep_monthly=self.keep_monthly,
                               max_age_days=self.max_age_days)

    @property
    def enabled(self) -> bool:
        return bool(self.repository)

    @property
    def host_name(self) -> str:
        return self.host or socket.gethostname()

    def pushes(self, backup_type: str, enabled: bool) -> bool:
        """Whether runs of `backup_type` copy their backups off-site."""
        return self.enabled and (backup_type in self.types if self.types else enabled)
