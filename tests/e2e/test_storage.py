"""The storage type against a live stack: the archive equals the tree, its databases are
consistent snapshots, and a tracker started on the extracted tree goes on counting."""

from __future__ import annotations

import os
import socket
import sqlite3
import stat
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_database_sqlite import manifest
from tests.kit.cli import ROOT, command, environment, trackerbackup
from tests.testbed.engine import docker
from tests.testbed.images import Images
from tests.testbed.prefix import (
    assert_prefix_consistent,
    assert_tables_prefix_consistent,
    read_seq_sqlite,
)
from tests.testbed.stack import LABEL, MYSQL_DATABASE, Stack
from trackerbackup.stream import open_raw

pytestmark = pytest.mark.testbed

# Written by the running writer while the archive is made: compared by kind and owner only.
LIVE = ("testbed-oplog.tsv", "testbed-status.json")


def transient(name: str) -> bool:
    """Created or removed since the archive was made: journals, the socket, the churn,
    the writer's status being replaced."""
    return name.endswith(("-journal", "-wal", "-shm", ".sock", ".tmp")) or "/churn/" in name


def storage_backups(stack: Stack) -> list[dict[str, Any]]:
    import json

    listed = trackerbackup(stack.config_path, "list", "storage", "--json")
    assert listed.returncode == 0, listed.stderr
    found: list[dict[str, Any]] = json.loads(listed.stdout)
    return found


def archive(backup: dict[str, Any], extract: dict[str, Path]) -> dict[str, tarfile.TarInfo]:
    """Every member; the content of the members named in `extract` goes to their path."""
    [name] = backup["artifacts"]
    found = {}
    with open_raw(Path(backup["path"]) / name, "zstd") as raw, \
            tarfile.open(fileobj=raw, mode="r|") as tar:
        for member in tar:
            found[member.name] = member
            if member.name in extract:
                data = tar.extractfile(member)
                assert data is not None
                extract[member.name].write_bytes(data.read())
    return found


def walk(top: Path) -> Iterator[Path]:
    yield top
    for directory, dirs, names in os.walk(top):
        for name in (*dirs, *names):
            yield Path(directory, name)


@pytest.fixture
def churn(sqlite_stack: Stack) -> Iterator[Path]:
    """Files created and removed in the tracker's log directory while a backup runs."""
    directory = sqlite_stack.tracker_log / "churn"
    directory.mkdir()
    stop = threading.Event()

    def run() -> None:
        number = 0
        while not stop.is_set():
            path = directory / f"{number % 50:02d}.tmp"
            path.write_bytes(b"x" * 4096)
            (directory / f"{(number + 25) % 50:02d}.tmp").unlink(missing_ok=True)
            number += 1

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield directory
    stop.set()
    thread.join()


def start_stand_in_on(tree_root: Path, images: Images) -> Stack:
    """The tracker stand-in on a tree that exists already (an extracted backup)."""
    stack = Stack("sqlite", root=tree_root, images=images)
    docker("network", "create", "--label", f"{LABEL}={stack.project}", stack.network)
    stack._create_tracker(images.tracker)
    stack.start_writer()
    return stack


def test_archive_of_a_live_stack_restores_to_a_tracker_that_goes_on_counting(
        sqlite_stack: Stack, churn: Path, images: Images, tmp_path: Path) -> None:
    stack = sqlite_stack
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(stack.tracker_log / "admin.sock"))
    stack.wait_for_commits(200)
    result = trackerbackup(stack.config_path, "run", "storage")
    sock.close()
    assert result.returncode == 0, result.stderr
    status = stack.writer_status()
    assert status["failed"] == 0, status["errors"]
    [backup] = storage_backups(stack)
    source = manifest(backup)["source"]
    warnings = manifest(backup)["warnings"]
    assert any("socket skipped" in w and "admin.sock" in w for w in warnings)

    prefix = str(stack.compose_dir).lstrip("/")
    tracker_db = f"{prefix}/storage/tracker/lib/database/tracker.db"
    grafana_db = f"{prefix}/storage/grafana/data/grafana.db"
    snapshot = tmp_path / "tracker.db"
    members = archive(backup, {tracker_db: snapshot})
    subs = {s["path"]: s for s in source["substitutions"]}
    assert set(subs) == {tracker_db, grafana_db}
    assert subs[tracker_db]["containers"] == [stack.tracker_container]
    assert subs[grafana_db]["containers"] == []
    assert all(s["integrity"] == "ok" for s in subs.values())
    seq = assert_prefix_consistent(snapshot, stack.initial_db, stack.oplog)
    assert seq > 0

    # member by member: every entry of the tree, with its owner, mode and kind
    tree = [*walk(stack.storage_dir), stack.compose_dir / "docker-compose.yml",
            stack.compose_dir / ".env"]
    for path in tree:
        name = str(path).lstrip("/")
        if transient(name):
            continue
        info, member = os.lstat(path), members.pop(name)
        assert (member.uid, member.gid, member.mode) == (
            info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)), name
        assert member.isdir() == stat.S_ISDIR(info.st_mode), name
        if stat.S_ISREG(info.st_mode) and name not in subs and path.name not in LIVE:
            assert member.size == info.st_size, name
            assert member.mtime == pytest.approx(info.st_mtime, abs=1e-6), name
    assert [n for n in members if not transient(n)] == [], "nothing but the tree"
    assert not [n for n in members if n.endswith(("-journal", "-wal", "-shm", ".sock"))]

    # extract into an empty directory and start the stand-in on it
    target = tmp_path / "restored"
    restored = trackerbackup(stack.config_path, "restore", "storage", "--latest",
                             "--target", str(target))
    assert restored.returncode == 0, restored.stderr
    stack.stop_writer()
    tree_root = target / str(stack.root).lstrip("/")
    db = tree_root / "opt/torrust/storage/tracker/lib/database/tracker.db"
    assert read_seq_sqlite(db) == seq
    again = start_stand_in_on(tree_root, images)
    try:
        again.wait_for_commits(100)
        status = again.stop_writer()
    finally:
        again.down()
    assert status["failed"] == 0, status["errors"]
    assert read_seq_sqlite(db) >= seq + 100  # it went on counting from the backup


def test_backup_dir_inside_storage_and_excludes(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    inside = stack.storage_dir / "backups"
    text = stack.config_path.read_text().replace(
        f'backup_dir = "{stack.backup_dir}"', f'backup_dir = "{inside}"')
    stack.config_path.write_text(text + '[storage]\nexclude = ["*.tsv", "*/caddy/data/*"]\n')
    (stack.tracker_log / "big.log").write_bytes(os.urandom(1 << 20))
    for _ in range(2):  # the second run finds the first backup inside the tree
        result = trackerbackup(stack.config_path, "run", "storage")
        assert result.returncode == 0, result.stderr
    newest = storage_backups(stack)[0]
    names = set(archive(newest, {}))
    storage = str(stack.storage_dir).lstrip("/")
    assert not [n for n in names if n.startswith(f"{storage}/backups")]
    assert not [n for n in names if n.endswith(".tsv")]
    assert f"{storage}/caddy/data" in names
    assert not [n for n in names if n.startswith(f"{storage}/caddy/data/")]
    assert f"{storage}/tracker/log/big.log" in names


def test_a_50k_file_tree_is_archived_with_flat_memory(
        sqlite_stack: Stack, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    stack = sqlite_stack
    many = stack.storage_dir / "caddy/data/many"
    for directory in range(100):
        (many / f"{directory:03d}").mkdir(parents=True)
        for number in range(500):
            (many / f"{directory:03d}" / f"{number:03d}.json").write_bytes(b"{}\n")
    started = time.monotonic()
    with open(tmp_path / "out", "w+") as out:
        process = subprocess.Popen(command(stack.config_path, "run", "storage"), cwd=ROOT,
                                   env=environment(), stdout=out, stderr=out)
        _, wait_status, usage = os.wait4(process.pid, 0)  # this run's own peak RSS
        process.returncode = os.waitstatus_to_exitcode(wait_status)
        out.seek(0)
        output = out.read()
    elapsed = time.monotonic() - started
    assert process.returncode == 0, output
    [backup] = storage_backups(stack)
    assert manifest(backup)["source"]["members"] > 50_000
    with capsys.disabled():  # reported, not asserted (speed is never asserted)
        print(f"\n[storage] 50k files: {elapsed:.1f} s, peak RSS {usage.ru_maxrss / 1024:.0f} MiB")


def test_mysql_flavour_archives_the_dump_instead_of_the_datadir(mysql_stack: Stack,
                                                                tmp_path: Path) -> None:
    stack = mysql_stack
    before = stack.wait_for_commits(200)
    result = trackerbackup(stack.config_path, "run", "storage")
    assert result.returncode == 0, result.stderr
    [backup] = storage_backups(stack)
    source = manifest(backup)["source"]
    storage = str(stack.storage_dir).lstrip("/")
    dump_name = f"{storage}/mysql/trackerbackup-dump/{MYSQL_DATABASE}.sql"
    [dump] = [s for s in source["substitutions"] if s["strategy"] == "mysql-dump"]
    assert (dump["path"], dump["replaces"], dump["database"]) == (
        dump_name, f"{storage}/mysql/data", MYSQL_DATABASE)
    assert dump["containers"] == [stack.mysql_container]
    assert dump["trailer"].startswith("-- Dump completed")
    assert "--single-transaction" in dump["dump_options"]

    dumped = tmp_path / "dump.sql"
    members = archive(backup, {dump_name: dumped})
    assert (members[dump_name].uid, members[dump_name].mode) == (0, 0o600)
    tree = [*walk(stack.storage_dir), stack.compose_dir / "docker-compose.yml",
            stack.compose_dir / ".env"]
    datadir = stack.mysql_data
    for path in tree:
        name = str(path).lstrip("/")
        if transient(name) or path == datadir or datadir in path.parents:
            continue
        info, member = os.lstat(path), members.pop(name)
        assert (member.uid, member.gid, member.mode) == (
            info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)), name
    assert [n for n in members if not transient(n)] == [dump_name], "the tree and the dump"

    stack.mysql_exec(b"CREATE DATABASE restored_db")
    stack.mysql_exec(dumped.read_bytes(), database="restored_db")
    seq = assert_tables_prefix_consistent(stack.mysql_tables("restored_db"), stack.initial_db,
                                          stack.oplog)
    assert seq >= before["last_seq"]
    assert {name: len(rows) for name, rows in stack.mysql_tables("restored_db").items()} \
        == dump["table_rows"]

    # the product loads it: in place, the tracker stopped, the live database dumped aside
    status = stack.stop_writer()
    assert status["failed"] == 0, status["errors"]
    restored = trackerbackup(stack.config_path, "restore", "storage", "--latest",
                             "--in-place", "--yes")
    assert restored.returncode == 0, restored.stderr
    assert stack.mysql_tables() == stack.mysql_tables("restored_db")
    assert list((stack.backup_dir / "safety").glob(f"storage-*/{MYSQL_DATABASE}.sql.zst"))


def test_a_wal_database_under_writes_is_substituted_by_a_consistent_snapshot(
        stack_factory: Callable[..., Stack], tmp_path: Path) -> None:
    stack = stack_factory(flavour="sqlite", journal_mode="wal")
    stack.wait_for_commits(200)
    assert stack.db_path.with_name("tracker.db-wal").exists()  # the writer is in WAL mode
    result = trackerbackup(stack.config_path, "run", "storage")
    assert result.returncode == 0, result.stderr
    [backup] = storage_backups(stack)
    tracker_db = str(stack.db_path).lstrip("/")
    snapshot = tmp_path / "tracker.db"
    members = archive(backup, {tracker_db: snapshot})
    assert not [n for n in members if n.startswith(f"{tracker_db}-")], "no -wal or -shm"
    [sub] = [s for s in manifest(backup)["source"]["substitutions"] if s["path"] == tracker_db]
    assert sub["journal_mode"] == "wal"
    with closing(sqlite3.connect(snapshot)) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert assert_prefix_consistent(snapshot, stack.initial_db, stack.oplog) > 0
    status = stack.stop_writer()
    assert status["failed"] == 0, status["errors"]
