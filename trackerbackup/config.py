"""The configuration file: TOML in, frozen typed objects out, every problem reported at once.

One declarative schema (`SCHEMA`) lists every section and key with its type, default and
allowed values; `load` checks the whole file against it before anything runs, so a typo
is an error that names the file, the key and what is expected, never a silent default.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from trackerbackup.errors import ConfigError
from trackerbackup.retention import RetentionPolicy, policy_problems

DEFAULT_PATH = Path("/etc/trackerbackup/trackerbackup.toml")
ENV_VAR = "TRACKERBACKUP_CONFIG"
BACKUP_TYPES = ("storage", "database", "selective")
COMPRESSIONS = ("zstd", "gzip", "none")

SELECTIVE_DEFAULT_PATHS = (
    "storage/tracker/etc",
    "storage/caddy/etc",
    "storage/caddy/data",
    "storage/grafana/provisioning",
    "storage/prometheus/etc",
    "docker-compose.yml",
    ".env",
)


@dataclass(frozen=True)
class Key:
    """One configuration key: its Python type, default and constraints."""

    kind: type
    default: Any
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    doc: str = ""


RETENTION_KEYS = {
    "keep_last": Key(int, 1, minimum=0, doc="the N newest verified backups"),
    "keep_daily": Key(int, 7, minimum=0, doc="the newest backup of each of the last N days"),
    "keep_weekly": Key(int, 0, minimum=0, doc="the newest backup of each of N ISO weeks"),
    "keep_monthly": Key(int, 0, minimum=0, doc="the newest backup of each of N months"),
    "max_age_days": Key(int, 0, minimum=0, doc="delete backups older than N days (0: off)"),
}


def _type_keys(*, paths: tuple[str, ...] | None, exclude: bool) -> dict[str, Key]:
    keys = {
        "enabled": Key(bool, True),
        "compression": Key(str, "zstd", choices=COMPRESSIONS),
        "compression_level": Key(int, 3, minimum=1),
    }
    if paths is not None:
        keys["paths"] = Key(list, list(paths))
    if exclude:
        keys["exclude"] = Key(list, [])
    return keys


SCHEMA: dict[str, dict[str, Key]] = {
    "general": {
        "backup_dir": Key(str, "/var/backups/trackerbackup"),
        "run_dir": Key(str, "/run/trackerbackup"),
        "compose_dir": Key(str, "/opt/torrust"),
        "storage_dir": Key(str, ""),
        "compose_project": Key(str, "torrust"),
        "docker": Key(str, "/usr/bin/docker"),
        "min_free_bytes": Key(int, 0, minimum=0),
    },
    "tracker": {
        "service": Key(str, "tracker"),
        "container": Key(str, "tracker"),
        "driver": Key(str, "sqlite", choices=("sqlite",)),
    },
    "sqlite": {
        "path_in_container": Key(str, "/var/lib/torrust/tracker/database/tracker.db"),
        "host_path": Key(str, ""),
        "max_writer_stall": Key(float, 1.0, minimum=0.0),
        "over_budget": Key(str, "pause", choices=("pause", "stop", "fail")),
        "integrity_check": Key(str, "full", choices=("full", "quick")),
    },
    "monitoring": {
        "textfile_dir": Key(str, ""),
        "ping_start": Key(str, ""),
        "ping_success": Key(str, ""),
        "ping_failure": Key(str, ""),
        "failure_command": Key(list, []),
    },
    "storage": _type_keys(paths=None, exclude=True),
    "database": _type_keys(paths=None, exclude=False),
    "selective": _type_keys(paths=SELECTIVE_DEFAULT_PATHS, exclude=True),
}

# Keys whose values are secrets (a ping URL holds its check's token): never echoed.
SECRET_KEYS = frozenset({"monitoring.ping_start", "monitoring.ping_success",
                         "monitoring.ping_failure"})

# Sections that may hold a [<section>.retention] table.
RETENTION_SECTIONS = BACKUP_TYPES


@dataclass(frozen=True)
class General:
    backup_dir: Path
    run_dir: Path
    compose_dir: Path
    storage_dir: Path
    compose_project: str
    docker: str
    min_free_bytes: int


@dataclass(frozen=True)
class Tracker:
    service: str
    container: str
    driver: str


@dataclass(frozen=True)
class Sqlite:
    path_in_container: str
    host_path: Path | None
    max_writer_stall: float
    over_budget: str
    integrity_check: str


@dataclass(frozen=True)
class Monitoring:
    textfile_dir: Path | None
    ping_start: str
    ping_success: str
    ping_failure: str
    failure_command: tuple[str, ...]


@dataclass(frozen=True)
class TypeSettings:
    """What one backup type does: [storage], [database] or [selective]."""

    name: str
    enabled: bool
    compression: str
    compression_level: int
    retention: RetentionPolicy
    paths: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    source: str
    general: General
    tracker: Tracker
    sqlite: Sqlite
    monitoring: Monitoring
    types: Mapping[str, TypeSettings] = field(default_factory=dict)

    def type(self, name: str) -> TypeSettings:
        return self.types[name]


def default_path() -> Path:
    return Path(os.environ.get(ENV_VAR) or DEFAULT_PATH)


def load(path: Path) -> Config:
    """Read and validate `path`; raises ConfigError listing every problem found."""
    source = str(path)
    try:
        text = path.read_bytes().decode("utf-8")
        document = tomllib.loads(text)
    except FileNotFoundError:
        raise ConfigError(
            source,
            [f"file not found; create it from /usr/share/doc/trackerbackup/examples or pass "
             f"--config PATH (or set {ENV_VAR})"],
        ) from None
    except PermissionError:
        raise ConfigError(source, ["file not readable: run as root (it holds secrets)"]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(source, [f"not valid TOML: {error}"]) from None
    try:
        return from_document(document, source)
    except ConfigError as error:
        lines = key_lines(text)
        raise ConfigError(source, [_with_line(p, lines) for p in error.problems]) from None


def key_lines(text: str) -> dict[str, int]:
    """'section.key' -> line number, for pointing at a key that failed validation."""
    lines: dict[str, int] = {}
    section = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line.strip("[] ")
            lines.setdefault(section, number)
        elif "=" in line and not line.startswith("#"):
            key = line.split("=", 1)[0].strip().strip('"')
            lines.setdefault(f"{section}.{key}" if section else key, number)
    return lines


def _with_line(problem: str, lines: dict[str, int]) -> str:
    where = problem.split(":", 1)[0]
    return f"line {lines[where]}: {problem}" if where in lines else problem


def from_document(document: Mapping[str, Any], source: str = "<memory>") -> Config:
    problems: list[str] = []
    values = _validate(document, problems)  # invalid values fall back to defaults here...
    return _build(values, source, problems)  # ...so this finds the rest, then raises


def _validate(document: Mapping[str, Any], problems: list[str]) -> dict[str, dict[str, Any]]:
    for name in document:
        if name not in SCHEMA:
            problems.append(_unknown(name, name, SCHEMA))
    values: dict[str, dict[str, Any]] = {}
    for section, keys in SCHEMA.items():
        table = document.get(section, {})
        if not isinstance(table, dict):
            problems.append(f"{section}: must be a table, not {_type_name(table)}")
            table = {}
        allowed: Mapping[str, Any] = keys
        if section in RETENTION_SECTIONS:
            allowed = {**keys, "retention": None}
        values[section] = _read_table(section, table, keys, allowed, problems)
        if section in RETENTION_SECTIONS:
            retention = table.get("retention", {})
            if not isinstance(retention, dict):
                problems.append(f"{section}.retention: must be a table")
                retention = {}
            values[section]["retention"] = _read_table(
                f"{section}.retention", retention, RETENTION_KEYS, RETENTION_KEYS, problems
            )
    return values


def _read_table(
    where: str,
    table: Mapping[str, Any],
    keys: Mapping[str, Key],
    allowed: Mapping[str, Any],
    problems: list[str],
) -> dict[str, Any]:
    for name in table:
        if name not in allowed:
            problems.append(_unknown(f"{where}.{name}", name, allowed))
    return {name: _read_value(f"{where}.{name}", table.get(name), key, problems)
            for name, key in keys.items()}


def _read_value(where: str, value: Any, key: Key, problems: list[str]) -> Any:
    if value is None:
        return key.default
    if key.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, key.kind) or (key.kind is int and isinstance(value, bool)):
        shown = "" if where in SECRET_KEYS else f" {value!r}"
        problems.append(f"{where}: expected {_kind_name(key.kind)}, got {_type_name(value)}{shown}")
        return key.default
    value = cast(Any, value)  # isinstance() against a runtime type narrowed it to object
    if key.kind is list and not all(isinstance(item, str) and item for item in value):
        problems.append(f"{where}: expected a list of non-empty strings")
        return key.default
    if key.choices and value not in key.choices:
        problems.append(f"{where}: {value!r} is not one of {', '.join(key.choices)}")
        return key.default
    if key.minimum is not None and value < key.minimum:
        problems.append(f"{where}: {value!r} is below the minimum {key.minimum:g}")
        return key.default
    return value


def _build(values: dict[str, dict[str, Any]], source: str, problems: list[str]) -> Config:
    general = values["general"]
    compose_dir = _absolute("general.compose_dir", general["compose_dir"], problems)
    storage_dir = general["storage_dir"] or str(compose_dir / "storage")
    built_general = General(
        backup_dir=_absolute("general.backup_dir", general["backup_dir"], problems),
        run_dir=_absolute("general.run_dir", general["run_dir"], problems),
        compose_dir=compose_dir,
        storage_dir=_absolute("general.storage_dir", storage_dir, problems),
        compose_project=general["compose_project"],
        docker=general["docker"],
        min_free_bytes=general["min_free_bytes"],
    )
    sqlite = values["sqlite"]
    host_path = sqlite["host_path"]
    built_sqlite = Sqlite(
        path_in_container=sqlite["path_in_container"],
        host_path=_absolute("sqlite.host_path", host_path, problems) if host_path else None,
        max_writer_stall=sqlite["max_writer_stall"],
        over_budget=sqlite["over_budget"],
        integrity_check=sqlite["integrity_check"],
    )
    monitoring = values["monitoring"]
    textfile_dir = monitoring["textfile_dir"]
    built_monitoring = Monitoring(
        textfile_dir=(
            _absolute("monitoring.textfile_dir", textfile_dir, problems) if textfile_dir else None
        ),
        ping_start=monitoring["ping_start"],
        ping_success=monitoring["ping_success"],
        ping_failure=monitoring["ping_failure"],
        failure_command=tuple(monitoring["failure_command"]),
    )
    command = built_monitoring.failure_command
    if command and not Path(command[0]).is_absolute():
        problems.append("monitoring.failure_command: the program (first item) must be an "
                        "absolute path")
    for key in ("ping_start", "ping_success", "ping_failure"):
        url = monitoring[key]
        if url and not url.startswith(("http://", "https://")):
            problems.append(f"monitoring.{key}: expected an http:// or https:// URL")
    types = {name: _build_type(name, values[name]) for name in BACKUP_TYPES}
    for name, settings in types.items():
        problems.extend(f"{name}.retention: {problem}"
                        for problem in policy_problems(settings.retention)
                        if "keep rule" in problem)  # negative values were reported above
    if problems:
        raise ConfigError(source, problems)
    return Config(
        source=source,
        general=built_general,
        tracker=Tracker(**values["tracker"]),
        sqlite=built_sqlite,
        monitoring=built_monitoring,
        types=types,
    )


def _build_type(name: str, values: dict[str, Any]) -> TypeSettings:
    return TypeSettings(
        name=name,
        enabled=values["enabled"],
        compression=values["compression"],
        compression_level=values["compression_level"],
        retention=RetentionPolicy(**values["retention"]),
        paths=tuple(values.get("paths", ())),
        exclude=tuple(values.get("exclude", ())),
    )


def _absolute(where: str, value: str, problems: list[str]) -> Path:
    path = Path(value)
    if not path.is_absolute():
        problems.append(f"{where}: {value!r} is not an absolute path")
    return path


def _unknown(where: str, name: str, known: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    suggestion = f" did you mean '{close[0]}'?" if close else ""
    return f"{where}: unknown name.{suggestion} Expected one of: {', '.join(known)}"


def _kind_name(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            list: "a list of strings"}[kind]


def _type_name(value: Any) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)
