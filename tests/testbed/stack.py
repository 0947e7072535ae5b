"""A Torrust-shaped stack on the test bed: tracker stand-in (+ MariaDB), real names and labels.

    with Stack(flavour="sqlite") as stack:
        stack.wait_for_commits(100)
        ...                                   # back up stack.db_path, run trackerbackup, ...
        stack.stop_writer()

Everything the stack starts carries the label `org.trackerbackup.testbed.project=<project>`;
`down()` (also on failure, and `python3 -m tests.testbed down`) removes it by that label.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from tests.kit.wait import wait_until
from tests.testbed import TestbedError, tree
from tests.testbed.engine import container_state, docker, run
from tests.testbed.images import Images, ensure_images
from tests.testbed.lifecycle import UpDown
from tests.testbed.record import WriterRecord

Flavour = Literal["sqlite", "mysql"]
TESTBED_DIR = Path(__file__).resolve().parent
LABEL = "org.trackerbackup.testbed.project"
DB_IN_CONTAINER = "/var/lib/torrust/tracker/database/tracker.db"
LOG_IN_CONTAINER = "/var/log/torrust/tracker"
MYSQL_DATABASE = "torrust_tracker"
MYSQL_USER = "torrust"
# MySQL columns holding integers, per table (to type the rows read back with the CLI).
INT_COLUMNS = {"whitelist": (0,), "torrents": (0, 2), "torrent_aggregate_metrics": (0, 2),
               "keys": (0, 2), "_testbed_seq": (0, 1)}


def toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string of printable text is a TOML basic string


class Stack(UpDown):
    """The stack: build the tree, start containers, expose paths/names, tear down."""

    def __init__(
        self,
        flavour: Flavour = "sqlite",
        *,
        root: Path | None = None,
        project: str | None = None,
        name_prefix: str | None = None,
        rows: int = 2000,
        journal_mode: str = "delete",
        writer_interval_ms: float = 5.0,
        start_writer: bool = True,
        images: Images | None = None,
        seed: int = 1,
    ) -> None:
        self.flavour: Flavour = flavour
        self.project = project or f"tbtest-{secrets.token_hex(4)}"
        prefix = name_prefix if name_prefix is not None else f"{self.project}-"
        self._own_root = root is None
        self.root = (Path(tempfile.mkdtemp(prefix=f"{self.project}-")) if root is None
                     else root.resolve())
        self.rows, self.seed = rows, seed
        self.journal_mode = journal_mode
        self.writer_interval_ms = writer_interval_ms
        self.start_writer_on_up = start_writer
        self._images = images
        self.tracker_container = f"{prefix}tracker"
        self.mysql_container: str | None = f"{prefix}mysql" if flavour == "mysql" else None
        self.network = f"{self.project}_database_network"
        self.compose_dir = self.root / "opt/torrust"
        self.storage_dir = self.compose_dir / "storage"
        self.tracker_lib = self.storage_dir / "tracker/lib"
        self.tracker_etc = self.storage_dir / "tracker/etc"
        self.tracker_log = self.storage_dir / "tracker/log"
        self.db_path = self.tracker_lib / "database/tracker.db"  # host side (sqlite flavour)
        self.mysql_data = self.storage_dir / "mysql/data"
        self.testbed_dir = self.root / "testbed"  # outside opt/torrust: ours, not the host's
        self.initial_db = self.testbed_dir / "initial.db"
        self.oplog = self.tracker_log / "testbed-oplog.tsv"
        self.status_path = self.tracker_log / "testbed-status.json"
        self.record = WriterRecord(self.status_path, self.oplog)
        self.backup_dir = self.root / "backups"
        self.run_dir = self.root / "run"
        self.config_path = self.root / "trackerbackup.toml"
        self.secrets = tree.Secrets.generate()

    # -- life cycle ------------------------------------------------------------------------

    def up(self) -> Stack:
        """Create the tree, start MariaDB (mysql flavour) and the tracker stand-in."""
        images = self._images or ensure_images()
        self.root.mkdir(parents=True, exist_ok=True)
        tree.create_tree(self.root, mysql=self.flavour == "mysql", secrets=self.secrets,
                         rows=self.rows, seed=self.seed, journal_mode=self.journal_mode,
                         initial_db=self.initial_db)
        self.backup_dir.mkdir(mode=0o700, exist_ok=True)
        self.run_dir.mkdir(mode=0o700, exist_ok=True)
        self.write_config()
        docker("network", "create", "--label", f"{LABEL}={self.project}",
               "--label", f"com.docker.compose.project={self.project}",
               "--label", "com.docker.compose.network=database_network", self.network)
        if self.mysql_container:
            self._start_mysql(images.mysql)
        self._create_tracker(images.tracker)
        if self.start_writer_on_up:
            self.start_writer()
        return self

    def down(self) -> None:
        """Remove every container and network of the project; our temp root too."""
        down_project(self.project)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- containers ------------------------------------------------------------------------

    def labels(self, service: str) -> list[str]:
        out: list[str] = []
        for key, value in {
            LABEL: self.project,
            "org.trackerbackup.testbed.root": str(self.root),
            "com.docker.compose.project": self.project,
            "com.docker.compose.service": service,
            "com.docker.compose.oneoff": "False",
            "com.docker.compose.container-number": "1",
            "com.docker.compose.project.working_dir": str(self.compose_dir),
            "com.docker.compose.project.config_files": str(self.compose_dir / "docker-compose.yml"),
        }.items():
            out += ["--label", f"{key}={value}"]
        return out

    def _start_mysql(self, image: str) -> None:
        assert self.mysql_container is not None
        docker("run", "-d", "--name", self.mysql_container, *self.labels("mysql"),
               "--network", self.network, "--network-alias", "mysql",
               "-v", f"{self.mysql_data}:/var/lib/mysql",
               "-v", f"{TESTBED_DIR}:/testbed:ro",
               "-e", "MYSQL_ROOT_PASSWORD", "-e", f"MYSQL_DATABASE={MYSQL_DATABASE}",
               "-e", f"MYSQL_USER={MYSQL_USER}", "-e", "MYSQL_PASSWORD",
               image, env={"MYSQL_ROOT_PASSWORD": self.secrets.mysql_root_password,
                           "MYSQL_PASSWORD": self.secrets.mysql_password})
        self.wait_mysql()
        # The init file held the passwords; it has been read at start.
        docker("exec", self.mysql_container, "rm", "-f", "/run/mysqld/init.sql")
        self.mysql_exec(tree.mysql_load_sql(self.initial_db), database=MYSQL_DATABASE)

    def wait_mysql(self, timeout: float = 90) -> None:
        def answers() -> bool:
            returncode: int = self._mysql_cli(["-e", "SELECT 1"], check=False).returncode
            return returncode == 0

        try:
            wait_until(answers, timeout, interval=0.3)
        except TimeoutError:
            proc = self._mysql_cli(["-e", "SELECT 1"], check=False)
            logs = docker("logs", "--tail", "30", str(self.mysql_container), check=False)
            raise TestbedError(f"MariaDB container {self.mysql_container} not ready after "
                               f"{timeout:.0f} s:\n{proc.stderr.decode()[-500:]}\n{logs}") from None

    def _mysql_cli(self, args: list[str], *, input_bytes: bytes | None = None,
                   check: bool = True) -> Any:
        """`mariadb -uroot ARGS` inside the MySQL container; the password travels in env."""
        if self.mysql_container is None:
            raise TestbedError("this stack has no MySQL container (flavour sqlite)")
        return run(["/usr/bin/docker", "exec", "-i", "-e", "MYSQL_PWD", self.mysql_container,
                    "mariadb", "-uroot", *args], input_bytes=input_bytes, check=check,
                   env={"MYSQL_PWD": self.secrets.mysql_root_password})

    def mysql_exec(self, sql: bytes, database: str = "") -> None:
        """Feed SQL to the MySQL container's client as root."""
        self._mysql_cli([database] if database else [], input_bytes=sql)

    def mysql_query(self, sql: str, database: str = MYSQL_DATABASE) -> list[list[str | None]]:
        """Rows of one query (tab-separated CLI output; NULL -> None)."""
        out = self._mysql_cli(["-N", "-B", database, "-e", sql]).stdout.decode()
        return [[None if f == "NULL" else f for f in line.split("\t")]
                for line in out.splitlines()]

    def mysql_tables(self, database: str = MYSQL_DATABASE) -> dict[str, list[tuple[Any, ...]]]:
        """The tracker's tables (and _testbed_seq) of a MySQL database, typed like SQLite's."""
        tables: dict[str, list[tuple[Any, ...]]] = {}
        for table, ints in INT_COLUMNS.items():
            rows = self.mysql_query(f"SELECT * FROM `{table}`", database)
            tables[table] = [tuple(int(v) if i in ints and v is not None else v
                                   for i, v in enumerate(row)) for row in rows]
        return tables

    def _create_tracker(self, image: str) -> None:
        writer_args = ["--interval-ms", str(self.writer_interval_ms), "--seed", str(self.seed)]
        if self.flavour == "mysql":
            writer_args += ["--driver", "mysql", "--mysql-host", "mysql",
                            "--mysql-database", MYSQL_DATABASE, "--mysql-user", MYSQL_USER]
        docker("create", "--init", "--name", self.tracker_container, *self.labels("tracker"),
               "--network", self.network, "--network-alias", "tracker",
               "-e", "USER_ID=1000", "-e", "MYSQL_PASSWORD",
               "-v", f"{self.tracker_lib}:/var/lib/torrust/tracker",
               "-v", f"{self.tracker_etc}:/etc/torrust/tracker",
               "-v", f"{self.tracker_log}:{LOG_IN_CONTAINER}",
               "-v", f"{TESTBED_DIR}:/testbed:ro",
               image, *writer_args, env={"MYSQL_PASSWORD": self.secrets.mysql_password})

    # -- the writer ------------------------------------------------------------------------

    def start_writer(self, timeout: float = 30) -> None:
        """Start the tracker container; return once its writer has committed once.

        The writer's counts start from 0 here; a restart of the container by anything else
        (`docker stop`/`start`, `docker restart`) continues them, like its sequence.
        """
        self.status_path.unlink(missing_ok=True)
        docker("start", self.tracker_container)
        self.wait_for_commits(1, timeout)

    def stop_writer(self, timeout: float = 20) -> dict[str, Any]:
        """SIGTERM the writer (the tracker container stops, like `docker stop tracker`).

        Returns the writer's final status.
        """
        docker("stop", "-t", str(int(timeout)), self.tracker_container)
        return self.record.final_status(diagnose=self._stopped_tracker_report)

    def _stopped_tracker_report(self) -> str:
        exit_code = docker("inspect", "-f", "{{.State.ExitCode}}", self.tracker_container,
                           check=False).strip()
        return (f"container {self.tracker_container} exit code {exit_code}, `docker logs`:\n"
                f"{self.tracker_logs()}")

    def tracker_logs(self, tail: int = 30) -> str:
        """The tail of the tracker container's output (the writer logs to stderr)."""
        proc = run(["/usr/bin/docker", "logs", "--tail", str(tail), self.tracker_container],
                   check=False)
        return (proc.stdout + proc.stderr).decode(errors="replace")

    def writer_status(self) -> dict[str, Any]:
        """committed, failed, last_seq, max_stall_ms, p99_stall_ms, errors, running."""
        return self.record.status()

    def wait_for_commits(self, count: int, timeout: float = 60) -> dict[str, Any]:
        """Wait until the writer has committed `count` ops since `start_writer()`.

        Restarts of the container in between do not reset the count (see start_writer).
        """
        return self.record.wait_for_commits(count, timeout, diagnose=self._tracker_report)

    def _tracker_report(self) -> str:
        return (f"container {self.tracker_container} {container_state(self.tracker_container)}"
                f"; `docker logs`:\n{self.tracker_logs()}")

    # -- trackerbackup ---------------------------------------------------------------------

    def write_config(self) -> Path:
        """A trackerbackup config for this stack (keys: trackerbackup/data/trackerbackup.toml)."""
        text = f"""# trackerbackup config for test bed stack {self.project}
[general]
backup_dir = {toml_str(str(self.backup_dir))}
run_dir = {toml_str(str(self.run_dir))}
compose_dir = {toml_str(str(self.compose_dir))}
storage_dir = {toml_str(str(self.storage_dir))}
compose_project = {toml_str(self.project)}
docker = "/usr/bin/docker"

[tracker]
service = "tracker"
container = {toml_str(self.tracker_container)}
driver = {toml_str(self.flavour)}
"""
        tree.write(self.config_path, text, 0o600)
        return self.config_path

    def describe(self) -> str:
        lines = [f"project      {self.project}", f"root         {self.root}",
                 f"compose dir  {self.compose_dir}", f"tracker      {self.tracker_container}"]
        if self.mysql_container:
            lines.append(f"mysql        {self.mysql_container}")
        else:
            lines.append(f"database     {self.db_path}")
        lines += [f"writer log   {self.oplog}", f"writer state {self.status_path}",
                  f"config       {self.config_path}", f"backups      {self.backup_dir}"]
        return "\n".join(lines)


def down_project(project: str) -> list[str]:
    """Remove the containers and networks labelled with this test bed project."""
    ids = docker("ps", "-aq", "--filter", f"label={LABEL}={project}").split()
    if ids:
        docker("rm", "-f", "-v", *ids)
    nets = docker("network", "ls", "-q", "--filter", f"label={LABEL}={project}").split()
    if nets:
        docker("network", "rm", *nets)
    return ids


def leftover_projects() -> list[str]:
    """Test bed projects that still have containers or networks."""
    out = docker("ps", "-a", "--filter", f"label={LABEL}",
                 "--format", f'{{{{.Label "{LABEL}"}}}}')
    out += docker("network", "ls", "--filter", f"label={LABEL}",
                  "--format", f'{{{{.Label "{LABEL}"}}}}')
    return sorted(set(out.split()))
