"""Tests of the test bed itself: the stand-ins behave like the real hosts' parts."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.kit.wait import wait_until
from tests.testbed.engine import container_state, docker
from tests.testbed.prefix import (
    PrefixMismatch,
    assert_prefix_consistent,
    assert_tables_prefix_consistent,
)
from tests.testbed.stack import Stack
from tests.testbed.tree import initial_rows
from tests.testbed.vm import VM
from tests.testbed.writer import next_op, writer_rng

pytestmark = pytest.mark.testbed


def online_copy(db: Path, dest: Path) -> Path:
    """A consistent copy of a live database with SQLite's backup API (one step)."""
    src = sqlite3.connect(db, timeout=5)
    dst = sqlite3.connect(dest)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    return dest


def assert_no_failed_writes(status: dict[str, object]) -> None:
    assert status["failed"] == 0, f"the writer lost writes: {status['errors']}"


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_sqlite_writer_log_matches_database(
    stack_factory: Callable[..., Stack], journal_mode: str, tmp_path: Path
) -> None:
    stack = stack_factory(flavour="sqlite", journal_mode=journal_mode)
    stack.wait_for_commits(200)
    snapshot = online_copy(stack.db_path, tmp_path / "snapshot.db")
    more = stack.wait_for_commits(stack.writer_status()["committed"] + 50)
    final = stack.stop_writer()

    seq = assert_prefix_consistent(snapshot, stack.initial_db, stack.oplog)
    assert 200 <= seq < final["last_seq"], (seq, more, final)
    assert assert_prefix_consistent(stack.db_path, stack.initial_db, stack.oplog) == \
        final["last_seq"]
    assert_no_failed_writes(final)
    with sqlite3.connect(stack.db_path) as conn:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == journal_mode


def test_prefix_check_detects_a_torn_snapshot(sqlite_stack: Stack, tmp_path: Path) -> None:
    sqlite_stack.wait_for_commits(50)
    sqlite_stack.stop_writer()
    torn = online_copy(sqlite_stack.db_path, tmp_path / "torn.db")
    with sqlite3.connect(torn) as conn:  # the seq says N, the rows say N-1 for one table
        conn.execute("UPDATE torrent_aggregate_metrics SET value = value - 1")
    with pytest.raises(PrefixMismatch, match="torrent_aggregate_metrics"):
        assert_prefix_consistent(torn, sqlite_stack.initial_db, sqlite_stack.oplog)


@pytest.mark.slow
def test_writer_counts_writes_lost_to_a_long_lock(sqlite_stack: Stack) -> None:
    """A lock held past the 5 s busy timeout loses writes, and the writer says so."""
    sqlite_stack.wait_for_commits(20)
    conn = sqlite3.connect(sqlite_stack.db_path, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")  # held until the writer gives a write up (5 s)
        wait_until(lambda: sqlite_stack.writer_status()["failed"] >= 1, 30,
                   what="a write lost to the lock")
        conn.execute("ROLLBACK")
    finally:
        conn.close()
    status = sqlite_stack.wait_for_commits(sqlite_stack.writer_status()["committed"] + 20)
    final = sqlite_stack.stop_writer()
    assert final["failed"] >= 1, status
    assert any("database is locked" in e for e in final["errors"]), final["errors"]
    assert final["max_stall_ms"] >= 5000
    # Lost writes are not in the log: the database is still initial + every logged op.
    assert assert_prefix_consistent(sqlite_stack.db_path, sqlite_stack.initial_db,
                                    sqlite_stack.oplog) == final["last_seq"]


def oplog_seqs(oplog: Path) -> list[int]:
    return [int(line.split("\t", 1)[0]) for line in oplog.read_text().splitlines()]


def test_restarted_or_paused_tracker_continues_like_the_real_one(
    sqlite_stack: Stack, tmp_path: Path
) -> None:
    """docker stop/start, restart and pause/unpause (trackerbackup's freezes, enable-wal):
    the writer keeps writing, continues its sequence and counts, and stops cleanly."""
    name = sqlite_stack.tracker_container
    sqlite_stack.wait_for_commits(50)
    docker("stop", "-t", "20", name)
    before = sqlite_stack.writer_status()
    assert before["running"] is False, before
    assert before["committed"] == before["last_seq"], before
    snapshot = online_copy(sqlite_stack.db_path, tmp_path / "stopped.db")
    docker("start", name)
    # A count taken before the restart is reached after it (the count continues).
    after = sqlite_stack.wait_for_commits(before["committed"] + 100)
    assert after["last_seq"] > before["last_seq"]
    docker("restart", "-t", "20", name)
    sqlite_stack.wait_for_commits(sqlite_stack.writer_status()["committed"] + 100)
    docker("pause", name)
    assert container_state(name) == "paused"
    docker("unpause", name)
    sqlite_stack.wait_for_commits(sqlite_stack.writer_status()["committed"] + 100)
    final = sqlite_stack.stop_writer()

    assert_no_failed_writes(final)
    assert final["starts"] == 3, final
    assert final["crashed"] is None, final
    assert final["committed"] == final["last_seq"], final  # one count since start_writer()
    # The op log was appended to, never truncated or repeated: exactly seqs 1..last.
    assert oplog_seqs(sqlite_stack.oplog) == list(range(1, final["last_seq"] + 1))
    assert assert_prefix_consistent(snapshot, sqlite_stack.initial_db,
                                    sqlite_stack.oplog) == before["last_seq"]
    assert assert_prefix_consistent(sqlite_stack.db_path, sqlite_stack.initial_db,
                                    sqlite_stack.oplog) == final["last_seq"]
    assert "Traceback" not in sqlite_stack.tracker_logs(tail=1000)


def test_writer_stream_repeats_neither_seed_rows_nor_an_earlier_run() -> None:
    """The writer's inserts into UNIQUE columns (whitelist, keys) must never meet a row of
    the seed data (tree.py draws from random.Random(seed)) or of its own earlier runs."""
    _, whitelist, keys = initial_rows(2_000_000, 1)  # 20,000 whitelisted hashes
    seeded = set(whitelist) | {key for key, _ in keys}

    def unique_inserts(start_seq: int, ops: int = 5000) -> list[str]:
        rng = writer_rng(1, start_seq)
        for _ in range(1000):  # the writer's sample of known torrents
            rng.randint(1, 2_000_000)
        known: list[str] = ["0" * 40]
        inserted = []
        for _ in range(ops):
            op, args = next_op(rng, known)
            if op in ("whitelist", "key"):
                inserted.append(args[0])
        return inserted

    first_run, restarted = unique_inserts(0), unique_inserts(137)
    assert first_run
    assert restarted
    assert not seeded & set(first_run)
    assert not set(first_run) & set(restarted)


def test_tracker_standin_is_shaped_like_the_real_one(sqlite_stack: Stack) -> None:
    info = json.loads(docker("inspect", sqlite_stack.tracker_container))[0]
    labels = info["Config"]["Labels"]
    assert labels["com.docker.compose.project"] == sqlite_stack.project
    assert labels["com.docker.compose.service"] == "tracker"
    mounts = {m["Destination"]: m["Source"] for m in info["Mounts"]}
    assert mounts["/var/lib/torrust/tracker"] == str(sqlite_stack.tracker_lib)
    assert mounts["/etc/torrust/tracker"] == str(sqlite_stack.tracker_etc)
    assert mounts["/var/log/torrust/tracker"] == str(sqlite_stack.tracker_log)
    no_cli = docker("exec", sqlite_stack.tracker_container, "sh", "-c",
                    "command -v sqlite3 || echo none")
    assert no_cli.strip() == "none"
    for tree in (sqlite_stack.tracker_lib, sqlite_stack.tracker_etc, sqlite_stack.tracker_log):
        for path in [tree, *tree.rglob("*")]:
            try:
                st = path.stat()
            except FileNotFoundError:
                continue  # a -journal of the live database, gone since it was listed
            assert (st.st_uid, st.st_gid) == (1000, 1000), path
            if path.is_dir():
                assert stat.S_IMODE(st.st_mode) == 0o2770, path
    env = sqlite_stack.compose_dir / ".env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o640
    grafana = sqlite_stack.storage_dir / "grafana/data/grafana.db"
    assert grafana.stat().st_uid == 472
    assert "admin" in (sqlite_stack.tracker_etc / "tracker.toml").read_text()
    assert sqlite_stack.config_path.is_file()


def test_mysql_writer_log_matches_database(mysql_stack: Stack) -> None:
    mysql_stack.wait_for_commits(200)
    final = mysql_stack.stop_writer()
    assert_no_failed_writes(final)
    seq = assert_tables_prefix_consistent(mysql_stack.mysql_tables(), mysql_stack.initial_db,
                                          mysql_stack.oplog)
    assert seq == final["last_seq"]
    data = mysql_stack.mysql_data
    assert (data.stat().st_uid, (data / "mysql").is_dir()) == (999, True)


PROBE_UNIT = """[Unit]
Description=test bed probe %i

[Service]
Type=oneshot
ExecStart=/bin/echo probe-%i-ran
"""


@pytest.mark.vm
def test_vm_runs_systemd_and_reaches_siblings(mysql_stack: Stack, vm: VM) -> None:
    assert vm.exec("systemctl", "is-system-running", check=False).stdout.strip() in (
        "running", "degraded")

    vm.write_file("/etc/systemd/system/probe@.service", PROBE_UNIT)
    vm.exec("systemctl", "daemon-reload")
    vm.exec("systemctl", "start", "probe@hello.service")
    result = vm.exec("systemctl", "show", "-p", "Result", "--value", "probe@hello.service")
    assert result.stdout.strip() == "success"
    assert "probe-hello-ran" in vm.exec("journalctl", "-u", "probe@hello.service",
                                        "-o", "cat").stdout

    vm.exec("python3", "-c", "from systemd import journal; journal.send('x', PROBE_FIELD='y')")

    def probe_entries() -> list[dict[str, str]]:
        out = vm.exec("journalctl", "PROBE_FIELD=y", "-o", "json").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    entries = wait_until(probe_entries, 5, interval=0.1, what="the probe's journal entry")
    assert [entry["MESSAGE"] for entry in entries] == ["x"]

    # The stack's root is visible at the same absolute path (host paths from docker inspect).
    vm.exec("test", "-f", str(mysql_stack.config_path))
    assert mysql_stack.mysql_container is not None
    select = vm.exec("docker", "exec", "-e", "MYSQL_PWD", mysql_stack.mysql_container,
                     "mariadb", "-uroot", "-N", "-e", "SELECT 1",
                     env={"MYSQL_PWD": mysql_stack.secrets.mysql_root_password})
    assert select.stdout.strip() == "1"
    assert mysql_stack.secrets.mysql_root_password not in " ".join(select.args)


def test_teardown_leaves_nothing(stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory(flavour="sqlite", start_writer=False)
    root, project = stack.root, stack.project
    stack.down()
    assert not root.exists()
    assert docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}") == ""
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(root) not in mounts
    assert os.path.exists("/var/run/docker.sock")


def build_dummy_deb(tmp: Path) -> Path:
    """A package with trackerbackup's run-time dependencies (debian/control's shape)."""
    pkg = tmp / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN/control").write_text(
        "Package: testbed-probe\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: test bed <root@localhost>\n"
        "Depends: python3, python3-systemd, python3-pymysql, python3-tomli-w, "
        "python3-zstandard, zstd, docker.io\nDescription: test bed probe package\n")
    (pkg / "usr/share/testbed-probe").mkdir(parents=True)
    (pkg / "usr/share/testbed-probe/ok").write_text("ok\n")
    deb = tmp / "testbed-probe_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(pkg), str(deb)],
                   check=True, capture_output=True)
    return deb


@pytest.mark.vm
def test_vm_installs_a_deb_offline(sqlite_stack: Stack, vm: VM, tmp_path: Path) -> None:
    vm.install_deb(build_dummy_deb(tmp_path))
    assert vm.exec("cat", "/usr/share/testbed-probe/ok").stdout == "ok\n"
    vm.exec("test", "-f", str(sqlite_stack.db_path))
