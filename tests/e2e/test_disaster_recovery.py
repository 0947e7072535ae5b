"""docs/disaster-recovery.md, step by step: the VM is gone, the backup directory was
kept; a fresh VM gets the package, verifies the copy, restores the selective and the
database backups, and the tracker runs on what came back."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.e2e.package_vm import configure, host, start
from tests.testbed.images import Images
from trackerbackup.stream import open_raw

pytestmark = [pytest.mark.testbed, pytest.mark.vm]


def tables(db: Path) -> dict[str, list[tuple[object, ...]]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        names = [r[0] for r in connection.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")]
        return {name: connection.execute(f'SELECT * FROM "{name}" ORDER BY 1').fetchall()
                for name in names}


def backed_up_tables(backup_dir: Path, scratch: Path) -> dict[str, list[tuple[object, ...]]]:
    [backup] = sorted((backup_dir / "database").glob("2*"))
    with open_raw(backup / "tracker.db.zst", "zstd") as raw, open(scratch, "wb") as out:
        shutil.copyfileobj(raw, out)
    return tables(scratch)


def test_the_disaster_recovery_runbook(images: Images, deb: Path, tmp_path: Path) -> None:
    kept = tmp_path / "kept-backups"
    with host(images, flavour="sqlite") as old:  # the host that is lost
        old.vm.install_deb(deb)
        configure(old)
        old.stack.wait_for_commits(100)
        for backup_type in ("selective", "database"):
            run = start(old.vm, f"trackerbackup@{backup_type}.service")
            assert run.succeeded, run.output
        shutil.copytree(old.stack.backup_dir, kept, symlinks=True)  # the operator's copy
        old_compose, old_env = old.stack.compose_dir, (old.stack.compose_dir / ".env").read_text()
    expected = backed_up_tables(kept, tmp_path / "expected.db")

    with host(images, flavour="sqlite") as new:
        vm, stack = new.vm, new.stack
        # 1. The stack's files exist, the tracker is not running.
        stack.stop_writer()
        # 2. Install, put the kept copy in place, verify it.
        vm.install_deb(deb)
        configure(new)
        shutil.rmtree(stack.backup_dir, ignore_errors=True)
        shutil.copytree(kept, stack.backup_dir, symlinks=True)
        stack.backup_dir.chmod(0o700)
        listed = vm.trackerbackup("list")
        verified = vm.trackerbackup("verify", "--all")
        assert listed.returncode == 0, listed.stderr
        assert verified.returncode == 0, verified.stdout + verified.stderr
        outcomes = sorted(line.split()[0] + line.split(":")[-1] for line in
                          verified.stdout.splitlines() if not line.startswith(" "))
        assert outcomes == ["database ok", "selective ok"]
        # 3. Configuration and TLS data from the selective backup, through a directory.
        dry = vm.trackerbackup("restore", "selective", "--latest", "--target",
                               "/root/restored", "--dry-run")
        restored = vm.trackerbackup("restore", "selective", "--latest", "--target",
                                    "/root/restored")
        assert dry.returncode == 0, dry.stderr
        assert restored.returncode == 0, restored.stderr
        vm.exec("cp", "-a", f"/root/restored{old_compose}/.", f"{stack.compose_dir}/")
        assert (stack.compose_dir / ".env").read_text() == old_env
        # 4. The database, with the tracker stopped.
        planned = vm.trackerbackup("restore", "database", "--latest", "--dry-run")
        database = vm.trackerbackup("restore", "database", "--latest", "--yes")
        assert planned.returncode == 0, planned.stderr
        assert database.returncode == 0, database.stderr
        assert tables(stack.db_path) == expected
        info = stack.db_path.stat()
        assert (info.st_uid, info.st_gid) == (1000, 1000)
        # 5. Start the stack and check.
        stack.start_writer()
        assert stack.wait_for_commits(20)["failed"] == 0
        check = vm.trackerbackup("check")
        assert check.returncode == 0, check.stdout + check.stderr
        verify_unit = start(vm, "trackerbackup@verify.service")
        assert verify_unit.succeeded, verify_unit.output
        assert stack.stop_writer()["failed"] == 0
