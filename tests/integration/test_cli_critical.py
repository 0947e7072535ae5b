"""The critical type as an operator runs it (`check`, `run`, `verify`, `restore --merge /
--replace`), on a database given by `sqlite.host_path` (no container; the test bed proves
the live tracker, tests/e2e/test_critical_sqlite.py)."""

from __future__ import annotations

import sqlite3
import tomllib
from pathlib import Path

import pytest

from tests.kit.cli import trackerbackup as cli
from tests.testbed.tree import create_sqlite_db


def configured(tmp_path: Path, journal_mode: str, extra: str = "") -> tuple[Path, Path]:
    live = tmp_path / "tracker.db"
    create_sqlite_db(live, 3000, seed=1, journal_mode=journal_mode)
    config = tmp_path / "trackerbackup.toml"
    config.write_text(
        f'[general]\nbackup_dir = "{tmp_path}/backups"\nrun_dir = "{tmp_path}/run"\n'
        f'docker = "/nonexistent/docker"\n[sqlite]\nhost_path = "{live}"\n{extra}')
    return config, live


def manifests(config: Path, backup_type: str = "critical") -> list[dict[str, object]]:
    return [tomllib.loads((path / "manifest.toml").read_text()) for path in
            sorted((config.parent / "backups" / backup_type).glob("2*"), reverse=True)]


def completed(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as connection:
        return dict(connection.execute(
            "SELECT info_hash, completed FROM torrents WHERE completed > 0").fetchall())


@pytest.mark.parametrize(("journal_mode", "method", "strategy"), [
    ("wal", "wal-read-transaction", ""), ("delete", "filtered-under-lock", "")])
def test_a_critical_run_records_its_method_rows_and_writer_wait(
    tmp_path: Path, journal_mode: str, method: str, strategy: str
) -> None:
    config, live = configured(tmp_path, journal_mode)

    checked = cli(config, "check", "critical")
    ran = cli(config, "run", "critical")
    verified = cli(config, "verify", "critical")

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"method: {method}" in checked.stdout
    assert "torrents where completed > 0" in checked.stdout
    assert ran.returncode == 0, ran.stderr
    [manifest] = manifests(config)
    source = manifest["source"]
    assert isinstance(source, dict)
    assert (source["kind"], source["method"], source["snapshot_strategy"]) == (
        "critical", method, strategy)
    assert source["writers_waited_seconds"] <= 1.0  # sqlite.max_writer_stall
    assert source["table_rows"] == {"keys": 10, "torrent_aggregate_metrics": 1,
                                    "torrents": len(completed(live)), "whitelist": 30}
    assert source["row_filters"] == ["torrents.completed > 0"]
    assert verified.returncode == 0, verified.stderr
    assert "row counts of 4 tables match the manifest" in verified.stdout
    assert [p.name for p in (tmp_path / "backups" / "critical").iterdir()
            if p.name.startswith(".")] == []  # no scratch file left behind


def test_check_names_the_key_of_an_unknown_table_or_column(tmp_path: Path) -> None:
    config, _ = configured(tmp_path, "delete", '[critical]\ntables = ["keys", "peers"]\n'
                           'row_filters = ["keys.expires > 0"]\n')

    checked = cli(config, "check", "critical")
    ran = cli(config, "run", "critical")

    assert checked.returncode == 2
    assert "critical.tables: the database" in checked.stdout
    assert "has no table 'peers'" in checked.stdout
    assert "critical.row_filters: table 'keys' has no column 'expires'" in checked.stdout
    assert ran.returncode == 2
    assert manifests(config) == []


def test_a_filter_that_is_not_the_grammar_is_a_config_error(tmp_path: Path) -> None:
    config, _ = configured(tmp_path, "delete",
                           '[critical]\nrow_filters = ["torrents.completed > 0 OR 1=1"]\n')

    checked = cli(config, "check")

    assert checked.returncode == 2
    assert "critical.row_filters: 'torrents.completed > 0 OR 1=1' is not TABLE.COLUMN OP " \
           "INTEGER" in checked.stderr


def test_restore_merges_or_replaces_only_when_asked_with_a_safety_copy(tmp_path: Path) -> None:
    config, live = configured(tmp_path, "wal")
    assert cli(config, "run", "critical").returncode == 0
    assert cli(config, "run", "database").returncode == 0
    saved = completed(live)
    with sqlite3.connect(live) as connection:
        connection.execute("UPDATE torrents SET completed = 0")  # the counts are lost

    unsaid = cli(config, "restore", "critical", "--latest", "--yes")
    on_database = cli(config, "restore", "database", "--latest", "--merge", "--yes")
    dry = cli(config, "restore", "critical", "--latest", "--merge", "--dry-run")
    assert completed(live) == {}
    merged = cli(config, "restore", "critical", "--latest", "--merge", "--yes")

    assert unsaid.returncode == 2
    assert "--merge" in unsaid.stderr
    assert "--replace" in unsaid.stderr
    assert on_database.returncode == 2
    assert "--merge is for critical snapshots" in on_database.stderr
    assert dry.returncode == 0, dry.stderr
    assert "merge tables keys, whitelist, torrent_aggregate_metrics, torrents" in dry.stdout
    assert merged.returncode == 0, merged.stderr
    assert completed(live) == saved
    [safety] = (tmp_path / "backups" / "safety").iterdir()
    assert completed(safety / "tracker.db") == {}
    assert (safety / "restore.toml").exists()
    assert list(tmp_path.glob("backups/.critical-restore-*")) == []


def test_a_budget_too_small_for_a_filtered_read_filters_a_snapshot(tmp_path: Path) -> None:
    config, live = configured(tmp_path, "delete", "max_writer_stall = 0.05\n")  # [sqlite]

    ran = cli(config, "run", "critical")

    assert ran.returncode == 0, ran.stderr
    [manifest] = manifests(config)
    source = manifest["source"]
    assert isinstance(source, dict)
    assert (source["method"], source["snapshot_strategy"]) == ("filtered-from-snapshot",
                                                               "locked-copy")
    assert source["table_rows"]["torrents"] == len(completed(live))
