"""Critical snapshots of the MariaDB stand-in while the tracker stand-in writes to it
(MySQL flavour): each is the critical filter applied to the database after an exact prefix
of the writer's commits, no write fails; a full restore plus a merge of a newer critical
snapshot gives every key and completed count of the newer state; replace makes the tables
the snapshot's; an unknown table is a `check` error; no password in output or manifest."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_critical_sqlite import critical_state
from tests.kit.cli import trackerbackup
from tests.testbed.prefix import compare, drop_ids
from tests.testbed.stack import Stack

pytestmark = pytest.mark.testbed

CRITICAL = ('[critical]\ntables = ["keys", "whitelist", "torrent_aggregate_metrics", '
            '"torrents", "_testbed_seq"]\n[critical.retention]\nkeep_last = 10\n')
Tables = dict[str, list[tuple[Any, ...]]]


def configure(stack: Stack, critical: str = CRITICAL) -> None:
    stack.write_config()
    stack.config_path.write_text(stack.config_path.read_text() + critical)


def critical_backups(stack: Stack) -> list[Path]:
    return sorted((stack.backup_dir / "critical").glob("2*"), reverse=True)


def source_of(backup: Path) -> dict[str, Any]:
    source: dict[str, Any] = tomllib.loads((backup / "manifest.toml").read_text())["source"]
    return source


def loaded(stack: Stack, backup: Path, database: str) -> Tables:
    """The snapshot's tables, loaded into a new database by `restore --target NAME`."""
    restored = trackerbackup(stack.config_path, "restore", "critical", "--id", backup.name,
                             "--target", database, "--yes")
    assert restored.returncode == 0, restored.stderr
    return stack.mysql_tables(database)


def without_ids(tables: Tables) -> Tables:
    """InnoDB's ids have gaps the SQLite replay does not: compare the rows without them."""
    return drop_ids(tables)


def expected_state(stack: Stack, seq: int) -> Tables:
    return without_ids(critical_state(stack, seq))


def seq_of(tables: Tables) -> int:
    return int(tables["_testbed_seq"][0][1])


def assert_no_password(stack: Stack, *texts: str) -> None:
    for secret in (stack.secrets.mysql_root_password, stack.secrets.mysql_password):
        assert not [text for text in texts if secret in text]


def test_critical_snapshots_are_the_filter_of_a_commit_prefix_and_no_write_fails(
    mysql_stack: Stack,
) -> None:
    stack = mysql_stack
    configure(stack)
    stack.wait_for_commits(200)
    outputs = []
    for _ in range(3):
        result = trackerbackup(stack.config_path, "run", "critical")
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout + result.stderr)
        stack.wait_for_commits(stack.writer_status()["committed"] + 50)
    verified = trackerbackup(stack.config_path, "verify", "critical", "--all")
    status = stack.stop_writer()

    assert status["failed"] == 0, status["errors"]
    assert verified.returncode == 0, verified.stdout + verified.stderr
    seqs = []
    for number, backup in enumerate(critical_backups(stack)):
        source = source_of(backup)
        assert (source["kind"], source["method"]) == ("critical-mysql",
                                                      "consistent-snapshot-read")
        assert source["row_filters"] == ["torrents.completed > 0"]
        assert source["writers_waited_seconds"] == 0.0
        tables = loaded(stack, backup, f"critical_{number}")
        assert {name: len(rows) for name, rows in tables.items()} == source["table_rows"]
        assert 0 < source["table_rows"]["torrents"] < len(stack.mysql_tables()["torrents"])
        seq = seq_of(tables)
        compare(without_ids(tables), expected_state(stack, seq), f"critical snapshot {seq}")
        seqs.append(seq)
        outputs.append((backup / "manifest.toml").read_text())
    assert len(seqs) == 3
    assert seqs == sorted(seqs, reverse=True)
    assert_no_password(stack, *outputs)


def test_full_restore_then_merge_of_a_newer_critical_snapshot_gives_the_newer_state(
    mysql_stack: Stack,
) -> None:
    stack = mysql_stack
    configure(stack)
    stack.wait_for_commits(100)
    assert trackerbackup(stack.config_path, "run", "database").returncode == 0
    stack.wait_for_commits(stack.writer_status()["committed"] + 300)  # new keys and counts
    ran = trackerbackup(stack.config_path, "run", "critical")
    assert ran.returncode == 0, ran.stderr
    stack.wait_for_commits(stack.writer_status()["committed"] + 50)
    assert stack.stop_writer()["failed"] == 0
    [backup] = critical_backups(stack)
    newer_seq = seq_of(loaded(stack, backup, "critical_newer"))

    full = trackerbackup(stack.config_path, "restore", "database", "--latest", "--yes")
    assert full.returncode == 0, full.stderr
    older = stack.mysql_tables()
    older_seq = seq_of(older)
    counted_on = next(h for _, h, c in older["torrents"] if c > 0)
    stack.mysql_exec(f"UPDATE torrents SET completed = 1000000 WHERE info_hash = "
                     f"'{counted_on}'".encode(), database="torrust_tracker")  # counted since
    merged = trackerbackup(stack.config_path, "restore", "critical", "--latest", "--merge",
                           "--yes")
    assert merged.returncode == 0, merged.stderr

    assert older_seq < newer_seq
    live = stack.mysql_tables()
    newer = critical_state(stack, newer_seq)
    newer["torrents"] = [(i, h, 1000000 if h == counted_on else c)
                         for i, h, c in newer["torrents"]]  # a merge never lowers a count
    assert sorted((key, valid) for _, key, valid in live["keys"]) == sorted(
        (key, valid) for _, key, valid in newer["keys"])
    assert {h: c for _, h, c in live["torrents"] if c > 0} == {
        h: c for _, h, c in newer["torrents"]}
    assert sorted(h for _, h in live["whitelist"]) == sorted(h for _, h in newer["whitelist"])
    assert {n: v for _, n, v in live["torrent_aggregate_metrics"]} == {
        n: v for _, n, v in newer["torrent_aggregate_metrics"]}
    assert list((stack.backup_dir / "safety").glob("critical-*/torrust_tracker.sql.zst"))
    assert stack.mysql_query("SHOW DATABASES LIKE 'trackerbackup_critical_%'") == []
    stack.start_writer()  # the tracker runs on the merged database
    assert stack.wait_for_commits(20)["failed"] == 0
    assert stack.stop_writer()["failed"] == 0


def test_replace_makes_the_tables_the_snapshots(mysql_stack: Stack) -> None:
    stack = mysql_stack
    configure(stack)
    stack.wait_for_commits(100)
    assert trackerbackup(stack.config_path, "run", "critical").returncode == 0
    stack.wait_for_commits(stack.writer_status()["committed"] + 100)  # counted on since
    [backup] = critical_backups(stack)
    saved = loaded(stack, backup, "critical_saved")
    assert stack.stop_writer()["failed"] == 0
    assert len(stack.mysql_tables()["torrents"]) > len(saved["torrents"])

    replaced = trackerbackup(stack.config_path, "restore", "critical", "--latest",
                             "--replace", "--yes")

    assert replaced.returncode == 0, replaced.stderr
    assert stack.mysql_tables() == saved  # ids included; torrents with completed = 0 gone


def test_check_names_an_unknown_table_and_column(mysql_stack: Stack) -> None:
    stack = mysql_stack
    configure(stack, '[critical]\ntables = ["keys", "peers", "torrents"]\n'
                     'row_filters = ["torrents.downloads > 0"]\n')

    checked = trackerbackup(stack.config_path, "check", "critical")
    ran = trackerbackup(stack.config_path, "run", "critical")

    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert "critical.tables: the database torrust_tracker" in checked.stdout
    assert "has no table 'peers'" in checked.stdout
    assert "critical.row_filters: table 'torrents' has no column 'downloads'" in checked.stdout
    assert ran.returncode == 2
    assert critical_backups(stack) == []
    configure(stack)
    fine = trackerbackup(stack.config_path, "check", "critical")
    assert "method: consistent-snapshot-read" in fine.stdout
    assert "torrust_tracker.torrents where completed > 0" in fine.stdout
