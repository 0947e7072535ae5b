"""The database type with tracker.driver = "mysql": a dump run inside the MySQL container.

`mysqldump` (MySQL) or `mariadb-dump` (MariaDB) runs in the container through
`docker exec` with --single-transaction (a consistent InnoDB snapshot, no table locks);
its stdout streams through the compressor and sha256 into the partial backup. The dump
counts only if the program exited 0, wrote no error, and its stream ends with the
`-- Dump completed` trailer. Credentials: trackerbackup/mysql.py.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from trackerbackup.config import Config
from trackerbackup.docker import Docker
from trackerbackup.dumpscan import DumpScanner
from trackerbackup.errors import BackupFailed
from trackerbackup.log import Event, fields, get_logger
from trackerbackup.mysql import MysqlServer
from trackerbackup.repository import PartialBackup
from trackerbackup.sources import Plan, SourceResult
from trackerbackup.stream import SUFFIX, Writable

log = get_logger()
_ERROR_LINE = re.compile(r"(?im)^.*\berror\b.*$")
# A dump is SQL text; zstd/gzip make it this many times smaller, or better (an estimate
# for the free-space check only).
COMPRESSION_FACTOR = 4
DUMP_PRIVILEGES = ("SELECT", "SHOW VIEW", "TRIGGER", "EVENT", "LOCK TABLES")


@dataclass(frozen=True)
class DumpOutcome:
    table_rows: dict[str, int]
    trailer: str
    warnings: tuple[str, ...]


def dump_checked(server: MysqlServer, database: str, out: Writable, *,
                 tables: Sequence[str] = (), options: Sequence[str] = ()) -> DumpOutcome:
    """Stream `database`'s dump (of `tables` only, if given; with `options` added) into
    `out`; raise BackupFailed unless it is whole."""
    scanner = DumpScanner()

    def sink(chunk: bytes) -> None:
        out.write(chunk)
        scanner.feed(chunk)

    streamed = server.dump(database, sink, tables=tables, options=options)
    errors = _ERROR_LINE.findall(streamed.stderr_tail)
    if errors:
        raise BackupFailed(f"the dump reported an error: {errors[-1].strip()}",
                           op="dump MySQL", hint="see the MySQL server's log")
    trailer = scanner.trailer
    if trailer is None:
        raise BackupFailed("the dump ended without its '-- Dump completed' trailer",
                           op="dump MySQL",
                           hint="the dump program was interrupted; run the backup again")
    warnings = tuple(line.strip() for line in streamed.stderr_tail.splitlines() if line.strip())
    return DumpOutcome(scanner.table_rows, trailer, warnings)


class MysqlDumpSource:
    def __init__(self, config: Config, backup_type: str, docker: Docker) -> None:
        self.settings = config.type(backup_type)
        self.server = MysqlServer(config, docker)

    def plan(self) -> Plan:
        server = self.server.server()
        database = self.server.database()
        facts = self.server.facts(database)
        if not facts.exists:
            self.server.database_missing(database)
        tables = facts.tables
        data_bytes = sum(size for _, _, size in tables)
        warnings = [*self._engine_warnings(tables),
                    *self._privilege_warnings(database, facts.grants)]
        return Plan(
            items=(f"{server.container.name}: database {database}",),
            estimated_bytes=data_bytes // COMPRESSION_FACTOR,
            warnings=tuple(warnings),
            details={"container": server.container.name, "flavour": server.flavour,
                     "version": server.version, "database": database,
                     "tables": len(tables), "data_bytes": data_bytes},
        )

    @staticmethod
    def _engine_warnings(tables: list[tuple[str, str, int]]) -> list[str]:
        other = [f"{name} ({engine or 'no engine'})" for name, engine, _ in tables
                 if engine.lower() != "innodb"]
        if not other:
            return []
        return [f"tables not in InnoDB: {', '.join(other)}: --single-transaction gives no "
                "consistent view of them; convert them (ALTER TABLE ... ENGINE=InnoDB)"]

    @staticmethod
    def _privilege_warnings(database: str, grants_text: str) -> list[str]:
        grants = grants_text.upper()
        if "ALL PRIVILEGES" in grants:
            return []
        missing = [p for p in DUMP_PRIVILEGES if p not in grants]
        if not missing:
            return []
        return [f"the MySQL user may lack {', '.join(missing)} on {database}, which the "
                "dump needs (SHOW GRANTS); grant them or set mysql.user"]

    def write(self, backup: PartialBackup, plan: Plan) -> SourceResult:
        server = self.server.server()
        database = str(plan.details["database"])
        name = f"{database}.sql{SUFFIX[self.settings.compression]}"
        with backup.artifact(name, self.settings.compression, self.settings.compression_level,
                             int(plan.details["data_bytes"]) or None) as out:
            outcome = dump_checked(self.server, database, out)
        log.info("dump of MySQL database %s (%s %s): %d tables, %d rows", database,
                 server.flavour, server.version, len(outcome.table_rows),
                 sum(outcome.table_rows.values()),
                 extra=fields(Event.SNAPSHOT_TAKEN, type=backup.type, id=backup.id,
                              strategy="mysql-dump"))
        return SourceResult(
            details={"source": {
                "kind": "mysql", "container": server.container.name,
                "flavour": server.flavour, "version": server.version, "database": database,
                "dump_tool": server.dump_tool, "dump_options": list(server.dump_options),
                "table_rows": outcome.table_rows, "trailer": outcome.trailer}},
            warnings=(*plan.warnings, *outcome.warnings),
        )
