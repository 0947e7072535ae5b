"""The critical type with tracker.driver = "mysql": the chosen tables and rows of the
tracker's MySQL database as one SQL file (`source.kind = "critical-mysql"`).

Write: the CREATE TABLE statements (the dump program, `--no-data`, through
`sources/mysql.dump_checked`), then the rows, read in one consistent snapshot
(`trackerbackup/mysql_critical.py`, which says why not one `--where` dump). Writers wait
0 s: the read takes no row locks. `check` validates the tables, the filtered columns and
their types against information_schema.

Verify (as the database type's dump): load into a scratch database, compare row counts.
Restore: `--target NAME` loads it into a new database; in place, after a safety dump of
the live database and with the tracker stopped, the snapshot is loaded into a scratch
database on the same server and merged (`INSERT ... SELECT ... ON DUPLICATE KEY UPDATE`,
the larger `completed` wins) or replaces the live tables, in one transaction; the scratch
database is dropped at the end. The meaning of merge and replace is the SQLite one
(`sources/critical_restore.py`).
"""

from __future__ import annotations

import secrets
import time
from contextlib import ExitStack
from typing import Any

from trackerbackup.config import Config, TypeSettings
from trackerbackup.docker import Docker
from trackerbackup.errors import UsageError
from trackerbackup.inplace import with_tracker_stopped
from trackerbackup.log import Event, fields, get_logger
from trackerbackup.mysql import MysqlServer
from trackerbackup.mysql_critical import (
    TableShape,
    read_rows,
    read_shapes,
    type_problems,
)
from trackerbackup.mysql_merge import apply_sql, merge_plan
from trackerbackup.repository import PartialBackup
from trackerbackup.rowfilter import selection_problems
from trackerbackup.sources import Plan, RestoreRequest, SourceResult, Step, StoredBackup
from trackerbackup.sources.critical import selection_of
from trackerbackup.sources.critical_restore import MODES
from trackerbackup.sources.mysql import COMPRESSION_FACTOR, MysqlDumpSource, dump_checked
from trackerbackup.sources.mysql_kind import MysqlDumpKind
from trackerbackup.stream import SUFFIX

log = get_logger()

KIND = "critical-mysql"
METHOD = "consistent-snapshot-read"
SCHEMA_OPTIONS = ("--no-data", "--skip-triggers")
# A filtered table's share of its data, for the free-space estimate only (the default
# filter keeps about 3% of a public tracker's torrents).
FILTERED_SHARE = 10
SCRATCH_PREFIX = "trackerbackup_critical_"
OP = "restore critical snapshot"


class CriticalMysqlSource:
    def __init__(self, config: Config, settings: TypeSettings, docker: Docker) -> None:
        self.settings = settings
        self.server = MysqlServer(config, docker)
        self.selection = selection_of(settings)
        self._shapes: dict[str, TableShape] | None = None  # the plan's, for the write

    def plan(self) -> Plan:
        server = self.server.server()
        database = self.server.database()
        shapes = self._shapes = self._checked_shapes(database)
        filtered = {f.table for f in self.selection.filters}
        data_bytes = sum(s.data_bytes // (FILTERED_SHARE if s.name in filtered else 1)
                         for s in shapes.values())
        engines = [(s.name, s.engine, s.data_bytes) for s in shapes.values()]
        return Plan(
            items=tuple(f"{server.container.name}: {database}.{table}" + (
                f" where {f.column} {f.operator} {f.value}"
                if (f := self.selection.filter_of(table)) else "")
                for table in self.selection.tables),
            estimated_bytes=data_bytes // COMPRESSION_FACTOR,
            warnings=tuple(MysqlDumpSource._engine_warnings(engines)),
            details={"container": server.container.name, "flavour": server.flavour,
                     "version": server.version, "database": database, "method": METHOD},
        )

    def _checked_shapes(self, database: str) -> dict[str, TableShape]:
        shapes = read_shapes(self.server, database, self.selection.tables)
        if not shapes and not self.server.database_exists(database):
            self.server.database_missing(database)
        name = self.settings.name
        columns = {table: shape.column_names for table, shape in shapes.items()}
        problems = [*selection_problems(columns, f"{database} (container "
                                        f"{self.server.container().name})", self.selection,
                                        f"{name}.tables", f"{name}.row_filters"),
                    *type_problems(shapes, f"{name}.tables")]
        if problems:
            raise UsageError("; ".join(problems), op="check critical tables",
                             hint="list tables and columns the tracker's database has "
                                  "(SHOW TABLES; SHOW COLUMNS FROM t), or remove the key to "
                                  "get the default")
        return shapes

    def write(self, backup: PartialBackup, plan: Plan) -> SourceResult:
        server = self.server.server()
        database = str(plan.details["database"])
        started = time.monotonic()
        # A docker exec less: the schema the plan (just before) checked.
        shapes = self._shapes or self._checked_shapes(database)
        name = f"{database}.sql{SUFFIX[self.settings.compression]}"
        with backup.artifact(name, self.settings.compression,
                             self.settings.compression_level) as out:
            schema = dump_checked(self.server, database, out, tables=self.selection.tables,
                                  options=SCHEMA_OPTIONS)
            read_started = time.monotonic()
            rows = read_rows(self.server, database, shapes, self.selection, out)
            read_seconds = time.monotonic() - read_started
        details = {"kind": KIND, "container": server.container.name,
                   "flavour": server.flavour, "version": server.version,
                   "database": database, "dump_tool": server.dump_tool,
                   "client_tool": server.client_tool, "method": METHOD,
                   "tables": list(self.selection.tables),
                   "row_filters": [str(f) for f in self.selection.filters],
                   "writers_waited_seconds": 0.0, "read_seconds": round(read_seconds, 6),
                   "table_rows": rows, "schema_trailer": schema.trailer,
                   "duration_seconds": round(time.monotonic() - started, 6)}
        self._log(backup, details)
        return SourceResult(details={"source": details},
                            warnings=(*plan.warnings, *schema.warnings))

    @staticmethod
    def _log(backup: PartialBackup, details: dict[str, Any]) -> None:
        log.info("critical snapshot of MySQL database %s (%s): %s rows, tracker writes "
                 "waited 0 ms", details["database"], details["method"],
                 sum(details["table_rows"].values()),
                 extra=fields(Event.CRITICAL_SNAPSHOT_TAKEN, type=backup.type, id=backup.id,
                              path=details["database"], strategy=details["method"],
                              stall_ms=0))


class CriticalMysqlKind(MysqlDumpKind):
    """Verify as the database type's dump (inherited); restore merges or replaces."""

    def restore_steps(self, backup: StoredBackup, request: RestoreRequest) -> list[Step]:
        if request.only:
            raise UsageError("--only selects paths of an archive; a critical snapshot is "
                             "restored whole", op=OP)
        if request.target is not None or request.target_text:
            return super().restore_steps(backup, request)
        if request.critical_mode not in MODES:
            raise UsageError("a critical snapshot is merged into the live database or "
                             "replaces its tables: say which", op=OP,
                             hint="--merge (upsert; the larger completed count wins; keeps "
                                  "every other row) or --replace (the tables become the "
                                  "snapshot's); --target NAME loads it into a new database")
        return self._merge_steps(backup, request.critical_mode, request.safety_copy)

    def _merge_steps(self, backup: StoredBackup, mode: str, safety_copy: bool) -> list[Step]:
        database = self.server.database()
        scratch = f"{SCRATCH_PREFIX}{secrets.token_hex(4)}"
        tables = [str(t) for t in backup.manifest.source.get("tables", [])]
        container = self.server.container().name
        live = f"database {database} on {container}"

        def load(stack: ExitStack) -> None:
            self.server.create_database(scratch)
            stack.callback(self.server.drop_database, scratch)
            self._load(backup, scratch)

        def apply(stack: ExitStack) -> None:
            sql = apply_sql(merge_plan(self.server, database, scratch, tables),
                            scratch, mode)
            self.server.query(sql, database)
            log.info("%s of critical snapshot %s into MySQL database %s: done", mode,
                     backup.id, database, extra=fields(type=backup.manifest.type,
                                                      id=backup.id))

        change = Step(f"{mode} tables {', '.join(tables)} of backup {backup.id} into {live} "
                      "(one transaction)", apply, consent=True)
        general = self.config.general
        return [Step(f"load backup {backup.id} into scratch database {scratch} on "
                     f"{container} (dropped at the end)", load),
                *with_tracker_stopped(backup, live, self._tracker(), self.docker,
                                      general.backup_dir, general.run_dir, [change],
                                      copy=self._safety_dump(database, live),
                                      safety_copy=safety_copy)]
