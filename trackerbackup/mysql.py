"""The MySQL/MariaDB server in its container: found, identified, queried, dumped, loaded.

Every client program runs inside the container with `docker exec`, started by a fixed
shell script (`CREDENTIALS_SCRIPT`) that reads the password from the container's own
environment (MYSQL_ROOT_PASSWORD, MYSQL_USER/MYSQL_PASSWORD, or their _FILE variants)
and hands it to the program in MYSQL_PWD: it never appears in any argv, on the host or
in the container. A password from trackerbackup's configuration (only from a root-owned
0600 file) travels the same way, through `docker exec -e MYSQL_PWD`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from trackerbackup import execute
from trackerbackup.config import Config
from trackerbackup.docker import Container, Docker
from trackerbackup.errors import ConfigError, EnvironmentProblem, TrackerBackupError, UsageError

# $1 program, $2 user ("" = from the environment), $3 option file ("" = none), then its
# arguments. Exit 90: no credentials found.
CREDENTIALS_SCRIPT = r"""
tool=$1 user=$2 extra=$3; shift 3
if [ -z "${MYSQL_PWD+x}" ] && [ -z "$extra" ]; then
  if [ -z "$user" ] || [ "$user" = root ]; then
    if [ -n "${MYSQL_ROOT_PASSWORD:-}" ]; then user=root; MYSQL_PWD=$MYSQL_ROOT_PASSWORD
    elif [ -n "${MYSQL_ROOT_PASSWORD_FILE:-}" ]; then
      user=root; MYSQL_PWD=$(cat "$MYSQL_ROOT_PASSWORD_FILE")
    fi
  fi
  if [ -z "${MYSQL_PWD+x}" ] && { [ -z "$user" ] || [ "$user" = "${MYSQL_USER:-}" ]; }; then
    if [ -n "${MYSQL_PASSWORD:-}" ]; then user=$MYSQL_USER; MYSQL_PWD=$MYSQL_PASSWORD
    elif [ -n "${MYSQL_PASSWORD_FILE:-}" ]; then
      user=$MYSQL_USER; MYSQL_PWD=$(cat "$MYSQL_PASSWORD_FILE")
    fi
  fi
  if [ -z "${MYSQL_PWD+x}" ]; then
    echo "trackerbackup: no password for user '${user:-root}' in the container's" \
         "environment (MYSQL_ROOT_PASSWORD, MYSQL_USER/MYSQL_PASSWORD)" >&2
    exit 90
  fi
fi
if [ -n "${MYSQL_PWD+x}" ]; then export MYSQL_PWD; fi
exec "$tool" ${extra:+"--defaults-extra-file=$extra"} ${user:+"--user=$user"} "$@"
"""
# One `docker exec` for what the plan needs to know: the programs (exit 91: no dump tool,
# 92: no client), MYSQL_DATABASE, then the server's version from the client, run by the
# credentials script ($1 user, $2 option file, as for CREDENTIALS_SCRIPT).
FACTS_SCRIPT = r"""
first() { for t in "$@"; do command -v "$t" >/dev/null 2>&1 && echo "$t" && return 0; done
          echo "trackerbackup: the container has none of $*" >&2; return 1; }
dump=$(first mariadb-dump mysqldump) || exit 91
client=$(first mariadb mysql) || exit 92
printf '%s\n%s\n%s\n' "$dump" "$client" "${MYSQL_DATABASE:-}"
set -- "$client" "$1" "$2" --batch --skip-column-names --execute "SELECT VERSION()"
""" + CREDENTIALS_SCRIPT
NO_TOOLS = {91: ("mariadb-dump", "mysqldump"), 92: ("mariadb", "mysql")}
NO_CREDENTIALS = 90
DUMP_OPTIONS = ("--single-transaction", "--quick", "--no-tablespaces", "--routines",
                "--triggers", "--events", "--hex-blob", "--default-character-set=utf8mb4")
MYSQL_ONLY_OPTIONS = ("--set-gtid-purged=OFF",)


@dataclass(frozen=True)
class Server:
    container: Container
    flavour: str  # "mariadb" or "mysql"
    version: str
    dump_tool: str
    client_tool: str

    @property
    def dump_options(self) -> tuple[str, ...]:
        return DUMP_OPTIONS + (MYSQL_ONLY_OPTIONS if self.flavour == "mysql" else ())


@dataclass(frozen=True)
class DatabaseFacts:
    """What the plan reads about one database, in one client call."""

    tables: list[tuple[str, str, int]]  # (name, engine, data_length) of every base table
    exists: bool
    grants: str  # SHOW GRANTS of the user, one line per grant


def quote_name(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def quote_text(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


class MysqlServer:
    """The configured MySQL container and the programs inside it."""

    def __init__(self, config: Config, docker: Docker) -> None:
        self.config = config
        self.settings = config.mysql
        self.docker = docker
        self._server: Server | None = None
        self._environment_database = ""  # the container's MYSQL_DATABASE
        self._env = self._password_env()

    def _password_env(self) -> dict[str, str]:
        password = self.settings.password
        if not password:
            return {}
        path = Path(self.config.source)
        info = os.stat(path)
        mode = stat.S_IMODE(info.st_mode)
        if info.st_uid != 0 or mode & 0o077:
            raise ConfigError(self.config.source, [
                f"mysql.password: allowed only in a file owned by root with mode 0600 "
                f"(this one: uid {info.st_uid}, mode {mode:04o}); chown root:root and chmod "
                f"600 it, or leave the password in the container's environment"])
        return {"MYSQL_PWD": password}

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(self._env.values())

    def container(self) -> Container:
        return self.server().container

    def server(self) -> Server:
        if self._server is None:
            self._server = self._identify()
        return self._server

    def _identify(self) -> Server:
        settings = self.settings
        container = self.docker.find(self.config.general.compose_project, settings.service,
                                     settings.container)
        if container.state != "running":
            raise EnvironmentProblem(
                f"MySQL container '{container.name}' is {container.state}", op="find MySQL",
                hint=f"start it (docker start {container.name}); the tracker needs it too")
        argv = ("sh", "-c", FACTS_SCRIPT, "sh", settings.user, settings.option_file)
        try:
            out = self.docker.exec_output(container, argv, op="find MySQL", env=self._env)
        except execute.CommandFailed as error:
            raise self._not_identified(error, container) from error
        lines = out.split("\n")
        if len(lines) < 4 or not lines[3].strip():
            raise EnvironmentProblem(f"container '{container.name}' did not say its MySQL "
                                     f"programs and server version: {out[-200:]!r}",
                                     op="find MySQL", hint="check the container's image")
        dump_tool, client_tool, environment_database, version = lines[:4]
        self._environment_database = environment_database
        flavour = "mariadb" if "mariadb" in version.lower() else "mysql"
        return Server(container, flavour, version, dump_tool, client_tool)

    def _not_identified(self, error: execute.CommandFailed,
                        container: Container) -> TrackerBackupError:
        names = NO_TOOLS.get(error.returncode)
        if names is None:
            return explain(error, "", container.name)
        return EnvironmentProblem(
            f"container '{container.name}' has none of {', '.join(names)}", op="find MySQL tools",
            hint="use the official mysql or mariadb image, or set mysql.container to "
            "the database container")

    def command(self, tool: str, *args: str) -> tuple[str, ...]:
        return ("sh", "-c", CREDENTIALS_SCRIPT, "sh", tool, self.settings.user,
                self.settings.option_file, *args)

    def database(self) -> str:
        if self.settings.database:
            return self.settings.database
        self.server()
        name = self._environment_database.strip()
        if not name:
            raise UsageError(f"container '{self.container().name}' has no MYSQL_DATABASE",
                             op="find the database", hint="set mysql.database")
        return name

    def database_missing(self, database: str) -> None:
        raise UsageError(f"database '{database}' does not exist in container "
                         f"'{self.container().name}'", op="find the database",
                         hint="set mysql.database (or the container's MYSQL_DATABASE)")

    # SQL text is built only with quote_name / quote_text.

    def tables(self, database: str) -> list[tuple[str, str, int]]:
        """(name, engine, data_length) of every base table, from information_schema."""
        rows = self.query(_tables_sql(database))
        return [(name, engine, int(size)) for name, engine, size in rows]

    def facts(self, database: str) -> DatabaseFacts:
        """Tables, existence and the user's grants: several statements, one client call."""
        sections: dict[str, list[list[str]]] = {}
        rows: list[list[str]] = []
        for row in self.query(" ".join(
                f"SELECT '{SECTION}{name}'; {sql};" for name, sql in (
                    ("tables", _tables_sql(database)), ("exists", _exists_sql(database)),
                    ("grants", "SHOW GRANTS")))):
            if len(row) == 1 and row[0].startswith(SECTION):
                rows = sections.setdefault(row[0][len(SECTION):], [])
            else:
                rows.append(row)
        return DatabaseFacts(
            tables=[(name, engine, int(size)) for name, engine, size in sections["tables"]],
            exists=bool(sections["exists"]),
            grants="\n".join(row[0] for row in sections["grants"]))

    def database_exists(self, database: str) -> bool:
        return bool(self.query(_exists_sql(database)))

    def create_database(self, database: str) -> None:
        self.query(f"CREATE DATABASE {quote_name(database)}")

    def drop_database(self, database: str) -> None:
        self.query(f"DROP DATABASE IF EXISTS {quote_name(database)}")

    def table_rows(self, database: str) -> dict[str, int]:
        """Exact row counts (COUNT(*)) of every base table of `database`."""
        tables = [name for name, _, _ in self.tables(database)]
        if not tables:
            return {}
        counts = (f"{quote_text(t)}, COUNT(*) FROM {quote_name(t)}" for t in tables)
        union = " UNION ALL ".join(f"SELECT {count}" for count in counts)
        return {name: int(count) for name, count in self.query(union, database)}

    def query(self, sql: str, database: str = "") -> list[list[str]]:
        return self._query(self.server(), sql, database)

    def _query(self, server: Server, sql: str, database: str) -> list[list[str]]:
        args = ("--batch", "--skip-column-names", "--execute", sql,
                *((database,) if database else ()))
        try:
            out = self.docker.exec_output(server.container,
                                          self.command(server.client_tool, *args),
                                          op="query MySQL", env=self._env)
        except execute.CommandFailed as error:
            raise explain(error, database, server.container.name) from error
        return [line.split("\t") for line in out.splitlines()]

    def dump(self, database: str, stdout_to: Callable[[bytes], object], *,
             tables: Sequence[str] = (), options: Sequence[str] = ()) -> execute.Streamed:
        """`tables`: only these (default: all); `options`: added to the dump options."""
        server = self.server()
        argv = self.command(server.dump_tool, *server.dump_options, *options, database,
                            *tables)
        try:
            return self.docker.exec_stream(server.container, argv, op="dump MySQL",
                                           stdout_to=stdout_to, env=self._env)
        except execute.CommandFailed as error:
            raise explain(error, database, server.container.name) from error

    def query_stream(self, sql: str, database: str,
                     stdout_to: Callable[[bytes], object]) -> execute.Streamed:
        """Run `sql` (statements in one session) and stream the rows it prints, unbuffered
        (--quick), tab-separated, without column names."""
        server = self.server()
        argv = self.command(server.client_tool, "--batch", "--skip-column-names", "--quick",
                            "--execute", sql, database)
        try:
            return self.docker.exec_stream(server.container, argv, op="read MySQL",
                                           stdout_to=stdout_to, env=self._env)
        except execute.CommandFailed as error:
            raise explain(error, database, server.container.name) from error

    def load(self, database: str, source: IO[bytes]) -> None:
        server = self.server()
        argv = self.command(server.client_tool, "--default-character-set=utf8mb4", database)
        try:
            self.docker.exec_stream(server.container, argv, op="load MySQL dump",
                                    stdin_from=source, env=self._env)
        except execute.CommandFailed as error:
            raise explain(error, database, server.container.name) from error



SECTION = "#trackerbackup "  # a marker row between the results of several statements


def _tables_sql(database: str) -> str:
    in_schema = f"table_schema = {quote_text(database)}"
    return ("SELECT table_name, COALESCE(engine, ''), COALESCE(data_length, 0) "  # noqa: S608
            "FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
            f"AND {in_schema} ORDER BY table_name")


def _exists_sql(database: str) -> str:
    named = f"schema_name = {quote_text(database)}"
    return f"SELECT 1 FROM information_schema.schemata WHERE {named}"  # noqa: S608


def explain(error: execute.CommandFailed, database: str, name: str) -> TrackerBackupError:
    """The failure of a client program, as the operator's problem it is."""
    tail = error.stderr_tail
    if error.returncode == NO_CREDENTIALS or "Access denied" in tail:
        return EnvironmentProblem(
            f"MySQL refused the credentials: {tail.strip()}", op=error.op,
            hint=f"check MYSQL_ROOT_PASSWORD / MYSQL_USER / MYSQL_PASSWORD of container "
            f"'{name}', or set mysql.user / mysql.option_file")
    if "Unknown database" in tail:
        return UsageError(f"database '{database}' does not exist in container '{name}'",
                          op=error.op, hint="set mysql.database (or MYSQL_DATABASE)")
    return error
