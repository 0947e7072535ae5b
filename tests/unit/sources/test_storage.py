"""The storage archive on the test kit's deployer-shaped tree, member by member, without
Docker (the containers' mounts come from a fake docker CLI; tests/e2e has the real one)."""

from __future__ import annotations

import dataclasses
import os
import socket
import sqlite3
import stat
import tarfile
import tomllib
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any, cast

import pytest

from tests.testbed import tree
from tests.unit.test_docker import container, fake_docker
from trackerbackup import config
from trackerbackup.docker import Container, Docker
from trackerbackup.errors import BackupFailed
from trackerbackup.execute import Streamed
from trackerbackup.mysql import MysqlServer, Server
from trackerbackup.repository import Repository
from trackerbackup.sources import RestoreRequest, StoredBackup, files
from trackerbackup.sources.registry import source_kind
from trackerbackup.sources.storage import StorageSource
from trackerbackup.sources.storage_mysql import StorageKind, dump_record, load_dump
from trackerbackup.stream import CHUNK, open_raw

SECRETS = tree.Secrets("root-pw", "pw", "grafana-pw", "token")


@dataclasses.dataclass
class Site:
    root: Path
    compose: Path
    storage: Path
    conf: config.Config
    docker: Docker

    @property
    def prefix(self) -> str:
        return str(self.compose).lstrip("/")


def make_site(tmp_path: Path, journal_mode: str = "delete", **storage: Any) -> Site:
    root = tmp_path / "host"
    compose = tree.create_tree(root, mysql=False, secrets=SECRETS, rows=300, seed=3,
                               journal_mode=journal_mode, initial_db=tmp_path / "initial.db")
    document = {"general": {"compose_dir": str(compose), "backup_dir": str(tmp_path / "backups"),
                            "run_dir": str(tmp_path / "run")},
                "storage": storage}
    tracker = container("t1", "tracker", "torrust", "tracker")
    tracker["Mounts"] = [{"Type": "bind", "Source": str(compose / "storage/tracker/lib"),
                          "Destination": "/var/lib/torrust/tracker"}]
    docker = fake_docker(tmp_path, [tracker])
    return Site(root, compose, compose / "storage", config.from_document(document), docker)


def run_storage(site: Site, source: StorageSource | None = None) -> StoredBackup:
    source = source or StorageSource(site.conf, site.conf.type("storage"), site.docker)
    plan = source.plan()
    with Repository(site.conf.general.backup_dir).begin("storage") as partial:
        result = source.write(partial, plan)
        partial.commit({**result.details, "warnings": list(result.warnings)})
    [backup] = Repository(site.conf.general.backup_dir).backups("storage")
    return StoredBackup(backup.path, backup.manifest)


def members(backup: StoredBackup, extract_to: Path | None = None) -> dict[str, tarfile.TarInfo]:
    path, artifact = backup.only_artifact()
    found = {}
    with open_raw(path, artifact.compression) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
        for member in tar:
            found[member.name] = member
            if extract_to is not None and member.isfile():
                data = tar.extractfile(member)
                assert data is not None
                (extract_to / member.name.replace("/", "%")).write_bytes(data.read())
    return found


def tree_entries(*roots: Path) -> Iterator[Path]:
    for root in roots:
        yield root
        if root.is_dir() and not root.is_symlink():
            for top, dirs, names in os.walk(root):
                for name in (*dirs, *names):
                    yield Path(top, name)


def test_archive_equals_the_tree_except_databases_which_are_snapshots(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    etc = site.storage / "tracker/etc"
    os.link(etc / "tracker.toml", etc / "tracker.toml.bak")
    os.symlink("tracker.toml", etc / "current.toml")
    (site.storage / "caddy/empty").mkdir()
    os.chmod(site.storage / "caddy/empty", 0o2750)
    os.lchown(etc / "current.toml", 1000, 1000)

    backup = run_storage(site)
    found = members(backup)
    databases = {f"{site.prefix}/storage/tracker/lib/database/tracker.db",
                 f"{site.prefix}/storage/grafana/data/grafana.db"}
    for path in tree_entries(site.storage, site.compose / "docker-compose.yml",
                             site.compose / ".env"):
        info, member = os.lstat(path), found.pop(str(path).lstrip("/"))
        assert (member.uid, member.gid, member.mode) == (
            info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)), path
        assert member.mtime == pytest.approx(info.st_mtime, abs=1e-6), path
        if stat.S_ISLNK(info.st_mode):
            assert (member.issym(), member.linkname) == (True, os.readlink(path))
        elif stat.S_ISDIR(info.st_mode):
            assert member.isdir()
        elif member.name.endswith("tracker.toml.bak"):
            assert member.islnk()
            assert member.linkname == f"{site.prefix}/storage/tracker/etc/tracker.toml"
        elif member.name not in databases:
            assert (member.isfile(), member.size) == (True, info.st_size), path
    assert found == {}, "nothing but the tree is archived"
    source = backup.manifest.source
    assert source["kind"] == "storage"
    assert source["members"] == len(list(tree_entries(site.storage))) + 2
    by_path = {s["path"]: s for s in source["substitutions"]}
    assert set(by_path) == databases
    tracker_db = by_path[f"{site.prefix}/storage/tracker/lib/database/tracker.db"]
    assert tracker_db["containers"] == ["tracker"]  # from the fake container's bind mount
    assert (tracker_db["journal_mode"], tracker_db["integrity"]) == ("rollback", "ok")
    assert tracker_db["strategy"] == "locked-copy"
    assert tracker_db["table_rows"]["torrents"] == 300
    assert by_path[f"{site.prefix}/storage/grafana/data/grafana.db"]["containers"] == []


def test_databases_are_found_by_header_and_their_journals_left_out(tmp_path: Path) -> None:
    site = make_site(tmp_path, journal_mode="wal")
    odd = site.storage / "tracker/lib/state.bin"  # a database whatever its name
    with sqlite3.connect(odd) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (42)")
    conn.close()
    (site.storage / "tracker/lib/notes.db").write_text("not a database\n" * 20)
    live = sqlite3.connect(site.storage / "tracker/lib/database/tracker.db")
    try:  # a live WAL connection keeps -wal and -shm in place, with a committed row in -wal
        live.execute("INSERT INTO whitelist (info_hash) VALUES ('f' || hex(randomblob(19)))")
        live.commit()
        assert (site.storage / "tracker/lib/database/tracker.db-wal").stat().st_size > 0
        backup = run_storage(site)
    finally:
        live.close()
    scratch = tmp_path / "out"
    scratch.mkdir()
    found = members(backup, scratch)
    lib = f"{site.prefix}/storage/tracker/lib"
    assert not [n for n in found if n.endswith(("-wal", "-shm", "-journal"))]
    assert found[f"{lib}/notes.db"].size == len("not a database\n" * 20)  # archived raw
    substituted = {s["path"]: s for s in backup.manifest.source["substitutions"]}
    assert set(substituted) == {f"{lib}/database/tracker.db", f"{lib}/state.bin",
                                f"{site.prefix}/storage/grafana/data/grafana.db"}
    assert substituted[f"{lib}/database/tracker.db"]["strategy"] == "wal-pinned-copy"
    snapshot = scratch / f"{lib}/database/tracker.db".replace("/", "%")
    with sqlite3.connect(snapshot) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT count(*) FROM whitelist").fetchone()[0] == 6
    conn.close()


def test_exclude_patterns_backup_dir_inside_a_socket_and_a_fifo(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = make_site(tmp_path, exclude=["*.log", "*/storage/caddy/data/*"])
    log_dir = site.storage / "tracker/log"
    (log_dir / "tracker.log").write_text("line\n")
    (log_dir / "keep.txt").write_text("kept\n")
    inside = site.storage / "backups"
    conf = dataclasses.replace(site.conf, general=dataclasses.replace(
        site.conf.general, backup_dir=inside))
    site = dataclasses.replace(site, conf=conf)
    listener = socket.socket(socket.AF_UNIX)
    monkeypatch.chdir(site.storage / "tracker/lib")  # a socket's path is short
    listener.bind("admin.sock")
    os.mkfifo(site.storage / "tracker/lib/control.fifo")
    try:
        backup = run_storage(site)
    finally:
        listener.close()
    names = set(members(backup))
    storage = f"{site.prefix}/storage"
    assert f"{storage}/tracker/log/keep.txt" in names
    assert f"{storage}/tracker/log/tracker.log" not in names
    assert f"{storage}/caddy/data" in names  # the directory itself is kept
    assert not [n for n in names if n.startswith(f"{storage}/caddy/data/")]
    assert not [n for n in names if n.startswith(f"{storage}/backups")]
    assert f"{storage}/tracker/lib/admin.sock" not in names
    warnings = backup.manifest.warnings
    assert any("socket skipped" in w and "admin.sock" in w for w in warnings)
    assert any("FIFO skipped" in w and "control.fifo" in w for w in warnings)
    assert f"{storage}/tracker/lib/control.fifo" not in names
    assert str(inside) in backup.manifest.source["excluded_dirs"]


DUMP = (b"CREATE TABLE `t` (id int);\nINSERT INTO `t` VALUES (1),(2);\n"
        b"-- Dump completed on 2026-01-01\n")


class FakeMysql:
    """The MySQL server as StorageSource uses it: identified, sized, dumped, loaded."""

    def __init__(self, trailer: bytes = DUMP) -> None:
        self.dump_bytes = trailer
        self.loaded: list[tuple[str, bytes]] = []
        self.created: list[str] = []

    def server(self) -> Server:
        return Server(Container("m1", "mysql", "running"), "mariadb", "11.4.2-MariaDB",
                      "mariadb-dump", "mariadb")

    def container(self) -> Container:
        return self.server().container

    def database(self) -> str:
        return "torrust_tracker"

    def tables(self, database: str) -> list[tuple[str, str, int]]:
        return [("t", "InnoDB", 16384)]

    def database_exists(self, database: str) -> bool:
        return False

    def create_database(self, database: str) -> None:
        self.created.append(database)

    def dump(self, database: str, stdout_to: Callable[[bytes], object], *,
             tables: Sequence[str] = (), options: Sequence[str] = ()) -> Streamed:
        assert (tables, options) == ((), ())  # the whole database
        stdout_to(self.dump_bytes)
        return Streamed("", len(self.dump_bytes))

    def load(self, database: str, source: IO[bytes]) -> None:
        self.loaded.append((database, source.read()))


def mysql_site(tmp_path: Path) -> tuple[Site, StorageSource, FakeMysql]:
    site = make_site(tmp_path)
    datadir = site.storage / "mysql/data"
    datadir.mkdir(parents=True)
    (datadir / "ibdata1").write_bytes(b"\0" * 4096)
    conf = dataclasses.replace(site.conf, tracker=dataclasses.replace(site.conf.tracker,
                                                                      driver="mysql"))
    site = dataclasses.replace(site, conf=conf)
    source = StorageSource(conf, conf.type("storage"), site.docker)
    fake = FakeMysql()
    source.mysql = cast(MysqlServer, fake)
    return site, source, fake


def test_mysql_flavour_archives_the_dump_instead_of_the_datadir(tmp_path: Path) -> None:
    site, source, _ = mysql_site(tmp_path)
    dump = f"{site.prefix}/storage/mysql/trackerbackup-dump/torrust_tracker.sql"
    (site.storage / "mysql/trackerbackup-dump").mkdir()  # left by a restore in place
    (site.storage / "mysql/trackerbackup-dump/torrust_tracker.sql").write_bytes(b"old")
    backup = run_storage(site, source)
    (tmp_path / "out").mkdir()
    found = members(backup, tmp_path / "out")
    assert f"{site.prefix}/storage/mysql" in found
    assert not [n for n in found if n.startswith(f"{site.prefix}/storage/mysql/data")]
    assert [n for n in found if "trackerbackup-dump" in n] == [dump]  # once, the new one
    assert (found[dump].mode, found[dump].uid, found[dump].size) == (0o600, 0, len(DUMP))
    assert (tmp_path / "out" / dump.replace("/", "%")).read_bytes() == DUMP
    [record] = [s for s in backup.manifest.source["substitutions"]
                if s["strategy"] == "mysql-dump"]
    assert record["replaces"] == f"{site.prefix}/storage/mysql/data"
    assert record["trailer"].startswith("-- Dump completed")
    assert record["table_rows"] == {"t": 2}
    assert record["containers"] == ["mysql"]


def test_mysql_dump_that_is_cut_short_fails_the_run(tmp_path: Path) -> None:
    site, source, fake = mysql_site(tmp_path)
    fake.dump_bytes = DUMP[:30]
    with pytest.raises(BackupFailed, match="trailer"):
        run_storage(site, source)
    assert not list(site.conf.general.backup_dir.glob("storage/2*"))


def test_mysql_dump_is_loaded_by_a_restore_in_place_only(tmp_path: Path) -> None:
    site, source, fake = mysql_site(tmp_path)
    backup = run_storage(site, source)
    kind = StorageKind(site.conf, site.docker)
    target = RestoreRequest(target=tmp_path / "restored")
    assert "unloaded" in kind.restore_steps(backup, target)[-1].description
    record = dump_record(backup.manifest.source)
    assert record is not None
    path, artifact = backup.only_artifact()
    load_dump(cast(MysqlServer, fake), path, artifact.compression, record, "torrust_tracker")
    assert fake.loaded == [("torrust_tracker", DUMP)]


def test_a_file_that_grows_shrinks_or_vanishes_during_the_walk_is_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = make_site(tmp_path)
    log_dir = site.storage / "tracker/log"
    growing = log_dir / "a-growing.log"
    growing.write_bytes(b"x" * 10_000)
    (log_dir / "b-removed.txt").write_text("gone soon\n")
    rotated = log_dir / "c-rotated.log"
    rotated.write_bytes(b"y" * 5_000)
    read = files._ExactReader.read

    def concurrent_writers(self: files._ExactReader, n: int = CHUNK) -> bytes:
        if self._path == str(growing):  # the tracker appends while the archive reads the log
            with open(growing, "ab") as out:
                out.write(b"more\n")
            (log_dir / "b-removed.txt").unlink(missing_ok=True)
        if self._path == str(rotated):  # logrotate's copytruncate
            os.truncate(rotated, 0)
        return read(self, n)

    monkeypatch.setattr(files._ExactReader, "read", concurrent_writers)
    backup = run_storage(site)
    names = members(backup)
    assert names[str(growing).lstrip("/")].size == 10_000
    assert str(log_dir / "b-removed.txt").lstrip("/") not in names
    warnings = "\n".join(backup.manifest.warnings)
    assert f"grew while read, archived its first 10,000 bytes: {growing}" in warnings
    assert f"vanished while read: {log_dir / 'b-removed.txt'}" in warnings
    assert names[str(rotated).lstrip("/")].size == 5_000  # the run did not fail
    assert f"shrank while read, its last 5,000 bytes archived as zeros: {rotated}" in warnings


def test_verify_and_restore_give_back_databases_as_plain_files(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    backup = run_storage(site)
    kind = source_kind("storage", site.conf, site.docker)
    assert "every one restorable" in kind.verify(backup, tmp_path / "scratch")[0]
    target = tmp_path / "restored"
    with ExitStack() as stack:
        for step in kind.restore_steps(backup, RestoreRequest(target=target)):
            step.run(stack)
    live = site.storage / "tracker/lib/database/tracker.db"
    restored = target / str(live).lstrip("/")
    before, after = os.lstat(live), os.lstat(restored)
    assert (after.st_uid, after.st_gid, after.st_mode) == (
        before.st_uid, before.st_gid, before.st_mode)
    assert not restored.with_name("tracker.db-journal").exists()
    with sqlite3.connect(restored) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT count(*) FROM torrents").fetchone()[0] == 300
    conn.close()
    manifest = tomllib.loads((backup.path / "manifest.toml").read_text())
    assert manifest["source"]["substitutions"][0]["integrity"] == "ok"


def test_the_tree_is_walked_once_per_run_after_the_first(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    source = StorageSource(site.conf, site.conf.type("storage"), site.docker)
    first = source.plan()
    assert f"{site.storage}/tracker/lib/database/tracker.db" in first.details["databases"]
    backup = run_storage(site, source)
    [artifact] = backup.manifest.artifacts
    snapshot = max(s["size_bytes"] for s in backup.manifest.source["substitutions"])
    second = source.plan()  # from the newest backup's manifest: no walk
    assert second.details["estimated_from"] == backup.id
    assert second.estimated_bytes == artifact.raw_size + snapshot
    assert "databases" not in second.details
