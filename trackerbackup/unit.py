"""What the systemd unit lets a run write, read from the installed unit files.

`trackerbackup@.service` runs with ProtectSystem=strict: only its ReadWritePaths= (and
its RuntimeDirectory=) are writable, so a backup_dir elsewhere fails with "Read-only file
system" until the operator adds a drop-in. `check` reads the unit and its drop-ins the
way systemd merges them (later files add paths, an empty assignment resets the list) to
say so before the first timer run does.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

UNIT_DIRS = (Path("/etc/systemd/system"), Path("/run/systemd/system"),
             Path("/usr/local/lib/systemd/system"), Path("/usr/lib/systemd/system"),
             Path("/lib/systemd/system"))
TEMPLATE = "trackerbackup@.service"
PRIVATE_TMP_DIRS = (Path("/tmp"), Path("/var/tmp"))
LIST_KEYS = ("ReadWritePaths", "RuntimeDirectory", "StateDirectory")


@dataclass(frozen=True)
class Sandbox:
    """The parts of the unit's [Service] section that decide where a run may write."""

    unit: str
    strict: bool
    private_tmp: bool
    writable: tuple[Path, ...]

    def refusal(self, path: Path) -> tuple[str, str] | None:
        """Why the unit cannot keep what a run writes to `path`, and the fix; or None."""
        if self.private_tmp and _under(path, PRIVATE_TMP_DIRS):
            return ("the unit has PrivateTmp=yes: what it writes under /tmp or /var/tmp is "
                    "deleted when the run ends", "choose a directory outside /tmp and /var/tmp")
        if self.strict and not _under(path, self.writable):
            shown = ", ".join(str(p) for p in self.writable) or "nothing"
            return (f"the unit has ProtectSystem=strict and may write only under {shown}: "
                    "a run would fail with 'Read-only file system'",
                    "add it to the unit: 'systemctl edit trackerbackup@.service', then "
                    f"[Service] ReadWritePaths={path}")
        return None


def _under(path: Path, parents: Iterable[Path]) -> bool:
    candidates = {Path(os.path.normpath(path)), Path(os.path.realpath(path))}
    for parent in parents:
        for base in {Path(os.path.normpath(parent)), Path(os.path.realpath(parent))}:
            if any(c == base or base in c.parents for c in candidates):
                return True
    return False


def sandbox(backup_type: str, unit_dirs: tuple[Path, ...] = UNIT_DIRS) -> Sandbox | None:
    """The sandbox of `trackerbackup@<type>.service`; None if the unit is not installed."""
    instance = f"trackerbackup@{backup_type}.service"
    main = _first(unit_dirs, instance) or _first(unit_dirs, TEMPLATE)
    if main is None:
        return None
    values: dict[str, list[str]] = {key: [] for key in LIST_KEYS}
    single: dict[str, str] = {}
    for path in (main, *_drop_ins(unit_dirs, (TEMPLATE, instance))):
        _apply(path, values, single)
    writable = [Path(p) for p in values["ReadWritePaths"]]
    writable += [Path("/run", p) for p in values["RuntimeDirectory"]]
    writable += [Path("/var/lib", p) for p in values["StateDirectory"]]
    return Sandbox(unit=instance,
                   strict=single.get("ProtectSystem", "no") == "strict",
                   private_tmp=single.get("PrivateTmp", "no") in ("yes", "true", "1", "on"),
                   writable=tuple(writable))


def _first(unit_dirs: tuple[Path, ...], name: str) -> Path | None:
    return next((d / name for d in unit_dirs if (d / name).is_file()), None)


def _drop_ins(unit_dirs: tuple[Path, ...], units: tuple[str, ...]) -> list[Path]:
    """*.conf of every unit's .d directory; a name in an earlier directory masks the same
    name in a later one; applied in name order."""
    found: dict[str, Path] = {}
    for unit in units:
        for directory in unit_dirs:
            drop_in_dir = directory / f"{unit}.d"
            if drop_in_dir.is_dir():
                for conf in drop_in_dir.glob("*.conf"):
                    found.setdefault(conf.name, conf)
    return [found[name] for name in sorted(found)]


def _apply(path: Path, values: dict[str, list[str]], single: dict[str, str]) -> None:
    section = ""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        if section != "Service" or "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        if key in values:
            if not value:
                values[key].clear()
            values[key] += [item.lstrip("-+") for item in shlex.split(value)]
        else:
            single[key] = value
