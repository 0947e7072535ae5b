"""The database type with tracker.driver = "mysql", against the MariaDB stand-in.

The tracker stand-in commits into MariaDB every ~5 ms while trackerbackup dumps it with
`docker exec ... mariadb-dump --single-transaction`. A dump loaded back must equal the
database after an exact prefix of the writer's commits; no write may fail; no password may
appear in any command line (host or container), log output or manifest; every failure
must exit with its code, record nothing and leave earlier backups intact.
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.e2e.test_database_sqlite import backups, manifest
from tests.kit.cli import trackerbackup as run_cli
from tests.testbed.engine import container_state, docker
from tests.testbed.prefix import assert_tables_prefix_consistent
from tests.testbed.stack import Stack

pytestmark = pytest.mark.testbed

# ~60,000 rows of 128 hex characters: a dump of ~9 MB that takes a while to stream.
FILLER_SQL = b"""
CREATE TABLE filler (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(200)) ENGINE=InnoDB;
INSERT INTO filler (v) SELECT SHA2(seq, 512) FROM seq_1_to_60000;
ANALYZE TABLE filler;
"""


def set_config(stack: Stack, mysql_section: str = "", backup_dir: Path | None = None) -> None:
    stack.write_config()
    text = stack.config_path.read_text()
    if backup_dir is not None:
        text = text.replace(f'backup_dir = "{stack.backup_dir}"', f'backup_dir = "{backup_dir}"')
    stack.config_path.write_text(text + (f"\n[mysql]\n{mysql_section}" if mysql_section else ""))


def trackerbackup(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(stack.config_path, *args)


def passwords(stack: Stack) -> tuple[str, str]:
    return stack.secrets.mysql_root_password, stack.secrets.mysql_password


class CmdlineScan:
    """Collects every command line on the host and in the MySQL container while active."""

    def __init__(self, container: str) -> None:
        self.container = container
        self.host: set[str] = set()
        self.inside: set[str] = set()
        self._stop = threading.Event()

    def _scan_host(self) -> None:
        while not self._stop.is_set():
            for proc in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    self.host.add(proc.read_bytes().replace(b"\0", b" ").decode("utf-8",
                                                                                 "replace"))
                except OSError:
                    continue

    def _scan_container(self) -> None:
        while not self._stop.is_set():
            out = subprocess.run(
                ["/usr/bin/docker", "exec", self.container, "sh", "-c",
                 "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done"],
                capture_output=True, check=False).stdout.decode("utf-8", "replace")
            self.inside.update(out.splitlines())

    @contextmanager
    def active(self) -> Iterator[CmdlineScan]:
        threads = [threading.Thread(target=self._scan_host),
                   threading.Thread(target=self._scan_container)]
        for thread in threads:
            thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            for thread in threads:
                thread.join()


KILL_DUMP = ("while :; do for p in /proc/[0-9]*; do "
             "if [ \"$(cat $p/comm 2>/dev/null)\" = mariadb-dump ]; then kill -9 ${p#/proc/}; "
             "exit 0; fi; done; done")


def load_filler(stack: Stack) -> None:
    stack.mysql_exec(FILLER_SQL, database="torrust_tracker")


def estimated_bytes(stack: Stack) -> int:
    planned = trackerbackup(stack, "run", "database", "--dry-run")
    assert planned.returncode == 0, planned.stderr
    found = re.search(r"about ([\d,]+) bytes", planned.stdout)
    assert found, planned.stdout
    return int(found.group(1).replace(",", ""))


def test_dump_under_writes_is_a_prefix_state_and_round_trips(mysql_stack: Stack) -> None:
    stack = mysql_stack
    before = stack.wait_for_commits(200)
    result = trackerbackup(stack, "run", "database")
    assert result.returncode == 0, result.stderr
    [backup] = backups(stack)
    source = manifest(backup)["source"]
    assert source["kind"] == "mysql"
    assert source["flavour"] == "mariadb"
    assert source["trailer"].startswith("-- Dump completed")
    assert "--single-transaction" in source["dump_options"]
    assert source["table_rows"]["torrents"] >= 2000

    verified = trackerbackup(stack, "verify", "database")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "row counts of 5 tables match" in verified.stdout
    restored = trackerbackup(stack, "restore", "database", "--latest", "--target",
                             "restored_db", "--yes")
    assert restored.returncode == 0, restored.stderr
    seq = assert_tables_prefix_consistent(stack.mysql_tables("restored_db"), stack.initial_db,
                                          stack.oplog)
    assert seq >= before["last_seq"]
    assert {name: len(rows) for name, rows in stack.mysql_tables("restored_db").items()} \
        == source["table_rows"]
    status = stack.stop_writer()
    assert status["failed"] == 0, status["errors"]
    assert status["max_stall_ms"] < 1000  # no table lock held the writer

    in_place = trackerbackup(stack, "restore", "database", "--latest", "--yes")
    assert in_place.returncode == 0, in_place.stderr
    [safety] = (stack.backup_dir / "safety").glob("database-*")
    assert (safety / "torrust_tracker.sql.zst").exists()
    assert (safety / "restore.toml").exists()
    assert stack.mysql_tables() == stack.mysql_tables("restored_db")
    assert container_state(stack.tracker_container) == "exited"  # left as it was

    stack.mysql_exec(b"DELETE FROM torrents", database="torrust_tracker")
    unsafe = trackerbackup(stack, "restore", "database", "--latest", "--yes",
                           "--no-safety-copy")
    assert unsafe.returncode == 0, unsafe.stderr
    assert "keep no copy of database torrust_tracker" in unsafe.stdout
    [second] = set((stack.backup_dir / "safety").glob("database-*")) - {safety}
    assert sorted(p.name for p in second.iterdir()) == ["restore.toml"]  # no dump in it
    assert stack.mysql_tables() == stack.mysql_tables("restored_db")


def test_no_password_in_any_command_line_log_or_manifest(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory(flavour="mysql")
    load_filler(stack)
    assert stack.mysql_container is not None
    outputs = []
    with CmdlineScan(stack.mysql_container).active() as scan:
        for _ in range(3):
            result = trackerbackup(stack, "--verbose", "run", "database")
            outputs.append(result.stdout + result.stderr)
            assert result.returncode == 0, result.stderr
    saw_dump = [line for line in scan.inside if "mariadb-dump" in line]
    assert saw_dump, "the scan never caught the dump running in the container"
    assert any("docker exec" in line or "/usr/bin/docker exec" in line for line in scan.host)
    texts = [*scan.host, *scan.inside, *outputs,
             *(manifest(b).__repr__() for b in backups(stack))]
    for secret in passwords(stack):
        assert not [text for text in texts if secret in text]


def test_a_password_in_the_config_needs_a_private_file(mysql_stack: Stack) -> None:
    stack = mysql_stack
    root_password = stack.secrets.mysql_root_password
    set_config(stack, f'user = "root"\npassword = "{root_password}"\n')
    stack.config_path.chmod(0o640)
    refused = trackerbackup(stack, "run", "database")
    assert refused.returncode == 2
    assert "mysql.password" in refused.stderr
    assert root_password not in refused.stdout + refused.stderr
    stack.config_path.chmod(0o600)
    accepted = trackerbackup(stack, "run", "database")
    assert accepted.returncode == 0, accepted.stderr
    assert root_password not in accepted.stdout + accepted.stderr


@contextmanager
def small_tmpfs(path: Path, size: int) -> Iterator[Path]:
    path.mkdir(mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def assert_nothing_recorded(stack: Stack, result: subprocess.CompletedProcess[str],
                            code: int, words: str, earlier: list[str]) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert words in output, output
    assert [b["id"] for b in backups(stack)] == earlier
    for secret in passwords(stack):
        assert secret not in output


def test_failures_exit_with_their_code_and_record_nothing(
    mysql_stack: Stack, tmp_path: Path,
) -> None:
    stack = mysql_stack
    assert stack.mysql_container is not None
    load_filler(stack)
    estimate = estimated_bytes(stack)  # a quarter of the data: the dump takes ~2x that
    stack.mysql_exec(b"CREATE DATABASE small_db; CREATE TABLE small_db.t (id INT PRIMARY KEY) "
                     b"ENGINE=InnoDB; INSERT INTO small_db.t VALUES (1), (2);")
    with small_tmpfs(tmp_path / "small", estimate * 13 // 10 + (256 << 10)) as small:
        set_config(stack, 'database = "small_db"\n', backup_dir=small)
        first = trackerbackup(stack, "run", "database")
        assert first.returncode == 0, first.stderr
        earlier = [b["id"] for b in backups(stack)]

        set_config(stack, 'user = "root"\npassword = "not-the-password"\n', backup_dir=small)
        assert_nothing_recorded(stack, trackerbackup(stack, "run", "database"), 3,
                                "refused the credentials", earlier)
        set_config(stack, 'database = "no_such_db"\n', backup_dir=small)
        assert_nothing_recorded(stack, trackerbackup(stack, "run", "database"), 2,
                                "no_such_db", earlier)

        tools = ("/usr/bin/mariadb-dump", "/usr/bin/mysqldump")
        set_config(stack, backup_dir=small)
        docker("exec", stack.mysql_container, "sh", "-c",
               " ".join(f"mv {t} {t}.off;" for t in tools))
        try:
            assert_nothing_recorded(stack, trackerbackup(stack, "run", "database"), 3,
                                    "has none of mariadb-dump, mysqldump", earlier)
        finally:
            docker("exec", stack.mysql_container, "sh", "-c",
                   " ".join(f"mv {t}.off {t};" for t in tools))

        assert_nothing_recorded(stack, trackerbackup(stack, "run", "database"), 3,
                                "No space left", earlier)
        assert not list(small.glob("database/.partial-*"))
        set_config(stack, 'database = "small_db"\n', backup_dir=small)
        verified = trackerbackup(stack, "verify", "database", "--all")
        assert verified.returncode == 0, verified.stdout + verified.stderr  # earlier intact

    set_config(stack)  # the roomy backup_dir again
    killer = subprocess.Popen(["/usr/bin/docker", "exec", stack.mysql_container, "sh", "-c",
                               KILL_DUMP])
    killed = trackerbackup(stack, "run", "database")
    killer.wait(timeout=30)
    assert_nothing_recorded(stack, killed, 1, "dump MySQL", [])

    stack.stop_writer()
    docker("stop", stack.mysql_container)
    assert_nothing_recorded(stack, trackerbackup(stack, "run", "database"), 3, "is exited", [])


def pause_when_dumping(container: str, comm: bytes = b"mariadb-dump\n") -> threading.Thread:
    """A thread that pauses `container` as soon as its dump process shows on the host."""

    def watch() -> None:
        for _ in range(200_000):
            for path in Path("/proc").glob("[0-9]*/comm"):
                try:
                    if path.read_bytes() == comm:
                        docker("pause", container)
                        return
                except OSError:
                    continue
        raise AssertionError("no dump process appeared")

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_mysql_paused_mid_dump_fails_the_run_naming_the_pause_instead_of_hanging(
        mysql_stack: Stack) -> None:
    stack = mysql_stack
    assert stack.mysql_container is not None
    load_filler(stack)  # a dump that streams for a while: the pause lands inside it
    earlier = [b["id"] for b in backups(stack)]

    pauser = pause_when_dumping(stack.mysql_container)
    try:
        paused = trackerbackup(stack, "run", "database")
        pauser.join(timeout=5)
        assert container_state(stack.mysql_container) == "paused"
    finally:
        if container_state(stack.mysql_container) == "paused":
            docker("unpause", stack.mysql_container)

    assert_nothing_recorded(stack, paused, 3, f"container '{stack.mysql_container}' is paused",
                            earlier)
    assert f"docker unpause {stack.mysql_container}" in paused.stderr
    assert not list((stack.backup_dir / "database").glob(".partial-*"))
    after = trackerbackup(stack, "run", "database")
    assert after.returncode == 0, after.stderr
    assert len(backups(stack)) == len(earlier) + 1
