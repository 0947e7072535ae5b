"""The configuration file: TOML in, frozen typed objects out, every problem reported at once.

The dataclasses below are the one declaration of every table and key: type (the
annotation), default, bounds or choices and documentation (`setting`). `load` checks the
whole file against them before anything runs (`schema.read_table`), so a typo is an error
that names the file, the line, the key and what is expected, never a silent default. The
example config and the key list of trackerbackup.toml(5) are rendered from the same
declarations (`config_docs`), and a test fails when the shipped copies differ.
"""

from __future__ import annotations

import functools
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from trackerbackup.backup_types import TYPES, BackupType
from trackerbackup.config_offsite import Offsite
from trackerbackup.errors import ConfigError
from trackerbackup.retention import RetentionPolicy, policy_problems
from trackerbackup.rowfilter import filters_problem, tables_problem
from trackerbackup.schema import Key, Setting, keys_of, read_table, setting, table_key

DEFAULT_PATH = Path("/etc/trackerbackup/trackerbackup.toml")
ENV_VAR = "TRACKERBACKUP_CONFIG"
# Levels each compressor accepts; zstd's 20-22 need gigabytes of memory, so they are out.
COMPRESSION_LEVELS = {"zstd": (1, 19), "gzip": (1, 9)}
COMPRESSIONS = (*COMPRESSION_LEVELS, "none")


def example_path() -> Path:
    """The example configuration shipped inside the package (every key at its default)."""
    from importlib import resources  # only on this error path: ~20 ms of start-up

    return Path(str(resources.files("trackerbackup.data") / "trackerbackup.toml"))


def _http_url(url: str) -> str | None:
    if url and not url.startswith(("http://", "https://")):
        return "expected an http:// or https:// URL"
    return None


def _absolute_program(command: tuple[str, ...]) -> str | None:
    if command and not Path(command[0]).is_absolute():
        return "the program (first item) must be an absolute path"
    return None


@dataclass(frozen=True)
class General:
    backup_dir: Path = setting(
        Path("/var/backups/trackerbackup"),
        "Where backups are written: local disk, an attached volume, an NFS mount. If it lies "
        "inside the storage tree it is left out of every archive automatically. Another "
        "directory must also be made writable for the service (trackerbackup(8), Sandbox).")
    run_dir: Path = setting(
        Path("/run/trackerbackup"),
        "Lock files (one per backup type) and markers for containers paused by a run.")
    compose_dir: Path = setting(
        Path("/opt/torrust"),
        "The Compose directory of the tracker stack (docker-compose.yml, .env, storage/).")
    storage_dir: Path | None = setting(
        None, "The storage tree; empty means <compose_dir>/storage.")
    compose_project: str = setting(
        "torrust",
        "Containers are found by their Compose labels: com.docker.compose.project = this "
        "value and com.docker.compose.service = tracker.service; then by name "
        "(tracker.container).")
    docker: str = setting(
        "/usr/bin/docker", "The docker CLI (the only way trackerbackup reaches containers).")
    min_free_bytes: int = setting(
        0, "Free space, in bytes, to leave on the backup file system on top of the "
        "backup's estimated size.", minimum=0, maximum=10**18)

    @property
    def storage(self) -> Path:
        """The storage tree: storage_dir, or <compose_dir>/storage when it is empty."""
        return self.storage_dir or self.compose_dir / "storage"


@dataclass(frozen=True)
class Tracker:
    service: str = setting(
        "tracker", "The value of the label com.docker.compose.service of the tracker.")
    container: str = setting(
        "tracker", "The container name used when no container has the Compose labels.")
    driver: str = setting(
        "sqlite", "The tracker's database driver: \"sqlite\" (a file snapshot, [sqlite]) "
        "or \"mysql\" (a dump run inside the MySQL/MariaDB container, [mysql]).",
        choices=("sqlite", "mysql"))


@dataclass(frozen=True)
class Sqlite:
    path_in_container: str = setting(
        "/var/lib/torrust/tracker/database/tracker.db",
        "The database file inside the tracker container; its host path is found through "
        "the container's bind mounts.")
    host_path: Path | None = setting(
        None, "The database file on the host, to skip the container lookup; empty: found "
        "with docker inspect.")
    max_writer_stall: float = setting(
        1.0, "Longest time the tracker's writers may wait for the snapshot, in seconds. The "
        "tracker gives up on a write after 5 s, so this stays below that.",
        minimum=0.0, maximum=4.0)
    over_budget: str = setting(
        "pause", "When a rollback-journal database is too large to copy within "
        "max_writer_stall:\n"
        "- \"pause\": docker pause the tracker for the copy (writes wait; peers stay in "
        "memory)\n"
        "- \"stop\": stop the tracker for the copy and start it again (peers are lost)\n"
        "- \"fail\": refuse, and advise switching the database to WAL mode\n"
        "WAL databases are copied online and never need either.",
        choices=("pause", "stop", "fail"))
    integrity_check: str = setting(
        "quick", "The check every new snapshot must pass before it counts. \"quick\": "
        "PRAGMA quick_check, every page's b-tree structure (a byte copy of a consistent "
        "state cannot break what only the full check adds, index/table agreement, unless "
        "the source had it broken already); `trackerbackup verify` (weekly timer) always "
        "runs the full integrity_check. \"full\": integrity_check at backup time too "
        "(about 2x the run time on a large database). ", choices=("full", "quick"))


def _database_name(name: str) -> str | None:
    if name and not all(c.isalnum() or c in "_$-" for c in name):
        return "expected a database name of letters, digits, _, $ and -"
    return None


@dataclass(frozen=True)
class Mysql:
    service: str = setting(
        "mysql", "The value of the label com.docker.compose.service of the MySQL container.")
    container: str = setting(
        "mysql", "The container name used when no container has the Compose labels.")
    database: str = setting(
        "", "The database to dump; empty: the container's MYSQL_DATABASE.",
        check=_database_name)
    user: str = setting(
        "", "The MySQL user the dump runs as; empty: root if the container has "
        "MYSQL_ROOT_PASSWORD (or _FILE), else its MYSQL_USER. Its password is read inside "
        "the container from MYSQL_ROOT_PASSWORD / MYSQL_PASSWORD (or their _FILE), and "
        "never appears in any command line.")
    option_file: str = setting(
        "", "An option file inside the container holding the credentials ([client] user=, "
        "password=); empty: the container's environment (above).")
    password: str = setting(
        "", "The password, if neither the container's environment nor an option file has "
        "it. Allowed only if this file is owned by root and mode 0600; it reaches the dump "
        "through the environment of docker exec, never a command line.", secret=True)


@dataclass(frozen=True)
class Monitoring:
    textfile_dir: Path | None = setting(
        None, "The node_exporter textfile collector directory (e.g. "
        "/var/lib/prometheus/node-exporter); empty: off. Gets trackerbackup_<type>.prom "
        "with the last success timestamp.")
    ping_start: str = setting(
        "", "A healthchecks-style URL pinged when a run starts; empty: off. Ping URLs are "
        "never logged in full.", check=_http_url, secret=True)
    ping_success: str = setting(
        "", "Pinged when a run succeeds.", check=_http_url, secret=True)
    ping_failure: str = setting(
        "", "Pinged when a run fails, with the error (or, from the OnFailure= unit, the end "
        "of the unit's log).", check=_http_url, secret=True)
    failure_command: tuple[str, ...] = setting(
        (), "A program run by trackerbackup-failure@TYPE.service when a backup unit fails, "
        "as a list: the program's absolute path, then its arguments (no shell). It gets "
        "TRACKERBACKUP_TYPE and TRACKERBACKUP_UNIT in its environment and the end of the "
        "unit's log on standard input.\n"
        "Example: [\"/usr/local/bin/page-oncall\", \"--severity\", \"high\"]",
        check=_absolute_program)


RETENTION = {
    "keep_last": Setting("Keep the N newest verified backups.", minimum=0, maximum=10_000),
    "keep_daily": Setting("Keep the newest backup of each of the last N days (UTC).",
                          minimum=0, maximum=36_500),
    "keep_weekly": Setting("Keep the newest backup of each of the last N ISO weeks.",
                           minimum=0, maximum=5_200),
    "keep_monthly": Setting("Keep the newest backup of each of the last N months.",
                            minimum=0, maximum=1_200),
    "max_age_days": Setting("Then delete backups that started more than N days before the "
                            "newest verified one (not before the clock's now: a clock "
                            "that jumped or weeks of failures expire nothing), even those a "
                            "daily, weekly or monthly rule picked, never the keep_last "
                            "newest; 0: no age limit.", minimum=0, maximum=36_500),
}


@dataclass(frozen=True)
class TypeSettings:
    """One backup type's table ([storage], [database], [selective]); `name` is the type."""

    name: str
    enabled: bool = setting(
        True, "false: every 'trackerbackup run TYPE' only logs that the type is disabled, "
        "unless given --force. To stop only the scheduled runs, disable the timer instead: "
        "systemctl disable --now trackerbackup@TYPE.timer.")
    compression: str = setting(
        "zstd", "\"zstd\" (2 threads, bounded memory), \"gzip\" or \"none\".", choices=COMPRESSIONS)
    compression_level: int = setting(
        3, "The compression level.", range_by=("compression", COMPRESSION_LEVELS))
    paths: tuple[str, ...] = setting(
        (), "Paths relative to general.compose_dir, or absolute. The default is what an "
        "operator cannot lose: tracker config, Caddy config and TLS data, Grafana "
        "provisioning, Prometheus config, the compose file and its .env.")
    exclude: tuple[str, ...] = setting(
        (), "Shell-style patterns (fnmatch: * ? [seq]; * also matches /) matched against "
        "each entry's host path without the leading / and against its name; an excluded "
        "directory is not entered. Examples: \"*.log\" (every .log file), "
        "\"opt/torrust/storage/tracker/log/*\" (a directory's content, the directory "
        "kept). Nothing is excluded by default: the storage type's archive is what a new "
        "host restores from.")
    tables: tuple[str, ...] = setting(
        (), "The tables of the tracker's database copied into each snapshot; `check` "
        "names any that the live database lacks. Tables not listed are left out.",
        check=tables_problem)
    row_filters: tuple[str, ...] = setting(
        (), "Which rows of a listed table are copied, as \"TABLE.COLUMN OP INTEGER\" (OP: "
        ">, >=, =, !=, <, <=), at most one per table; a table without a filter is copied "
        "whole. The default keeps the torrents downloaded at least once: those with "
        "completed = 0 come back with the next announce.", check=filters_problem)
    retention: RetentionPolicy = setting(
        RetentionPolicy(), "Which backups of this type are kept: the union of the keep_* "
        "rules, then max_age_days. Only verified backups count; the newest verified backup "
        "is never deleted, and nothing is deleted while no verified backup exists.",
        fields=RETENTION)


@dataclass(frozen=True)
class Config:
    source: str
    general: General = setting(General(), "Where backups go and where the tracker is.")
    tracker: Tracker = setting(Tracker(), "How the tracker's container is found.")
    sqlite: Sqlite = setting(Sqlite(), "How the tracker's SQLite database is snapshotted.")
    mysql: Mysql = setting(Mysql(), "How the tracker's MySQL database is dumped "
                           "(tracker.driver = \"mysql\").")
    monitoring: Monitoring = setting(Monitoring(), "Metrics, pings and a failure hook.")
    offsite: Offsite = setting(Offsite(), "Off-site copies through restic: encrypted, "
                               "deduplicated, one repository for a fleet of trackers.")
    types: Mapping[str, TypeSettings] = field(default_factory=dict)

    def type(self, name: str) -> TypeSettings:
        return self.types[name]


def type_keys(backup_type: BackupType) -> tuple[Key, ...]:
    """TypeSettings' keys as `backup_type` has them: its own paths and exclude, and
    enabled by default only if this version can run it."""
    keys = []
    for key in keys_of(TypeSettings):
        if key.name == "enabled":
            key = replace(key, default=backup_type.available)
        elif key.name == "paths":
            if backup_type.paths is None:
                continue
            key = replace(key, default=backup_type.paths)
        elif key.name == "exclude" and not backup_type.exclude:
            continue
        elif key.name in ("tables", "row_filters"):
            if backup_type.tables is None:
                continue
            key = replace(key, default=getattr(backup_type, key.name))
        elif key.name == "retention":
            key = replace(key, default=backup_type.retention, table=tuple(
                replace(field, default=getattr(backup_type.retention, field.name))
                for field in key.table))
        keys.append(key)
    return tuple(keys)


def document_keys() -> tuple[Key, ...]:
    """The top-level tables of a configuration file, in the order the example lists them."""
    return (*keys_of(Config), *(
        table_key(t.name, functools.partial(TypeSettings, t.name), type_keys(t), t.summary)
        for t in TYPES))


def _secret_keys() -> frozenset[str]:
    """'monitoring.ping_start', ...: the keys whose values are never echoed (a ping URL
    holds its check's token)."""
    return frozenset(f"{table.name}.{key.name}" for table in keys_of(Config)
                     for key in table.table if key.setting.secret)


SECRET_KEYS = _secret_keys()


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
            [f"file not found; copy the example {example_path()} there, or pass "
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
    tables = read_table("", document, document_keys(), problems)
    types = {t.name: tables.pop(t.name) for t in TYPES}
    for name, settings in types.items():
        problems.extend(f"{name}.retention: {problem}"
                        for problem in policy_problems(settings.retention)
                        if "keep rule" in problem)  # out-of-range values were reported
    offsite = tables["offsite"]
    problems.extend(f"offsite.retention: {problem}"
                    for problem in policy_problems(offsite.retention) if "keep rule" in problem)
    if offsite.enabled and offsite.password_file is None:
        problems.append("offsite.password_file: required when offsite.repository is set "
                        "(a root-only file holding the repository's password)")
    if problems:
        raise ConfigError(source, problems)
    return Config(source=source, types=types, **tables)
