"""A hostile or broken repository, a full or read-only disk, through the real command line.

Each planted entry is one the issue reproduced against 0.1.0: none may crash a command,
lead a deletion outside backup_dir, count as a verified backup, or make a run delete the
backup it has just made. Errors are one clear message with their exit code, no traceback.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.kit import filesystems
from tests.kit.cli import trackerbackup
from trackerbackup.manifest import MANIFEST

FUTURE_ID = "20991231T000000.000000Z"


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


def fails(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def listed_ids(site: Path) -> list[str]:
    return [b["id"] for b in json.loads(ok(trackerbackup(site, "list", "--json")).stdout)]


def made_id(result: subprocess.CompletedProcess[str]) -> str:
    match = re.search(r"selective backup (\S+):", result.stdout)
    assert match, result.stdout
    return match[1]


def plant_copy(site: Path, backup_id: str, name: str, edit: tuple[str, str] = ("", "")) -> Path:
    """A copy of a committed backup under another directory name, its manifest edited."""
    source = site / "backups/selective" / backup_id
    target = site / "backups/selective" / name
    shutil.copytree(source, target)
    text = (target / MANIFEST).read_text().replace(f'id = "{backup_id}"', f'id = "{name}"')
    (target / MANIFEST).write_text(text.replace(*edit, 1) if edit[0] else text)
    return target


def add_config(site: Path, text: str) -> None:
    config = site / "trackerbackup.toml"
    config.write_text(config.read_text() + text)


def test_a_backup_dated_in_the_future_never_makes_a_run_delete_its_own(site: Path) -> None:
    add_config(site, "[selective.retention]\nkeep_last = 1\nkeep_daily = 1\n")
    first = made_id(ok(trackerbackup(site, "run", "selective")))
    future = plant_copy(site, first, FUTURE_ID)
    text = (future / MANIFEST).read_text()
    for key in ("started", "finished"):
        text = re.sub(rf'{key} = "[^"]+"', f'{key} = "2099-12-31T00:00:00+00:00"', text)
    (future / MANIFEST).write_text(text)
    for _ in range(2):
        result = ok(trackerbackup(site, "run", "selective"))
        assert made_id(result) in listed_ids(site)
    assert FUTURE_ID in listed_ids(site)
    dry = ok(trackerbackup(site, "prune", "--dry-run")).stdout
    assert re.search(rf"{FUTURE_ID} +would keep +started in the future", dry), dry


@pytest.mark.parametrize("link", ["backups", "backups/selective"])
def test_a_symlinked_backup_dir_is_refused_and_nothing_outside_is_deleted(
    site: Path, link: str
) -> None:
    outside = site / "outside"
    ok(trackerbackup(site, "run", "selective"))
    shutil.move(site / link, outside)
    (outside / ".partial-20260101T000000.000000Z").mkdir()
    (site / link).symlink_to(outside)
    before = sorted(p.name for p in outside.rglob("*"))
    for command in (("run", "selective"), ("prune",), ("list",)):
        message = fails(trackerbackup(site, *command), 3)
        assert "is a symbolic link, not a directory" in message
    assert sorted(p.name for p in outside.rglob("*")) == before


def test_planted_entries_are_reported_and_never_followed_nor_deleted(site: Path) -> None:
    good = made_id(ok(trackerbackup(site, "run", "selective")))
    outside = site / "outside"
    shutil.copytree(site / "backups/selective" / good, outside)
    selective = site / "backups/selective"
    (selective / FUTURE_ID).symlink_to(outside)
    (selective / ".partial-20260101T000000.000000Z").write_text("a file")
    (selective / ".partial-20260102T000000.000000Z").symlink_to(outside)
    for _ in range(2):
        ok(trackerbackup(site, "run", "selective"))
    listing = ok(trackerbackup(site, "list"))
    assert f"{selective / FUTURE_ID} is not a backup, left alone: a symbolic link" \
        in listing.stderr
    assert FUTURE_ID not in listing.stdout
    assert (selective / FUTURE_ID).is_symlink()
    assert not list(selective.glob(".partial-*"))
    assert (outside / MANIFEST).is_file()


MALFORMED = {
    "toml datetime": ('started = "', "started = 2026-11-20T03:00:00Z\nwas = \""),
    "artifacts = 5": ("[[artifacts]]", "[not_artifacts]"),
    "warnings = 3": ("warnings = [", "warnings = 3\nwas = ["),
    "no time zone": ("+00:00", ""),
    'verified = "false"': ("verified = true", 'verified = "false"'),
}


def test_malformed_manifests_are_reported_never_counted_nor_deleted(site: Path) -> None:
    good = made_id(ok(trackerbackup(site, "run", "selective")))
    planted = [plant_copy(site, good, f"2026010{n}T000000.000000Z", edit)
               for n, edit in enumerate(MALFORMED.values(), start=1)]
    if "artifacts = 5" in MALFORMED:
        text = (planted[1] / MANIFEST).read_text()
        (planted[1] / MANIFEST).write_text("artifacts = 5\n" + text)
    listing = ok(trackerbackup(site, "list", "--json"))
    assert [b["id"] for b in json.loads(listing.stdout)] == [good]
    for path in planted:
        assert f"{path} is not a backup, left alone: manifest.toml is unusable" in listing.stderr
    ok(trackerbackup(site, "prune"))
    ok(trackerbackup(site, "run", "selective"))
    assert all((path / MANIFEST).is_file() for path in planted)


def test_fifos_in_place_of_a_manifest_or_the_metrics_file_do_not_hang(site: Path) -> None:
    good = made_id(ok(trackerbackup(site, "run", "selective")))
    fifo_backup = plant_copy(site, good, "20260101T000000.000000Z")
    (fifo_backup / MANIFEST).unlink()
    os.mkfifo(fifo_backup / MANIFEST)
    metrics = site / "metrics"
    metrics.mkdir()
    os.mkfifo(metrics / "trackerbackup_selective.prom")
    add_config(site, f'[monitoring]\ntextfile_dir = "{metrics}"\n'
               '[selective]\npaths = ["absent"]\n')  # a failed run reads the old metrics
    try:
        listing = trackerbackup(site, "list", timeout=60)
        failed = trackerbackup(site, "run", "selective", timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("a command waited for a writer on a FIFO")
    assert "manifest.toml is unusable: a FIFO, not a regular file" in ok(listing).stderr
    assert "none of the configured paths exists" in fails(failed, 1)
    assert (metrics / "trackerbackup_selective.prom").is_file()


def test_a_backup_whose_artifact_was_deleted_is_listed_unverified(site: Path) -> None:
    backup_id = made_id(ok(trackerbackup(site, "run", "selective")))
    (site / "backups/selective" / backup_id / "files.tar.zst").unlink()
    [backup] = json.loads(ok(trackerbackup(site, "list", "--json")).stdout)
    assert backup["verified"] is False
    assert backup["problems"] == ["artifact files.tar.zst is missing"]
    assert "artifact files.tar.zst is missing" in ok(trackerbackup(site, "list")).stdout


def test_a_disk_that_fills_while_the_manifest_is_written_is_exit_3_without_a_trace(
    site: Path
) -> None:
    # Thousands of configured paths that do not exist make a manifest far larger than the
    # archive: the archive fits, the manifest does not.
    missing = ", ".join(f'"absent/{n:04d}-{"x" * 80}"' for n in range(3000))
    add_config(site, f'[selective]\npaths = ["storage/tracker/etc", {missing}]\n')
    with filesystems.tmpfs(site / "backups", "size=256k"):
        message = fails(trackerbackup(site, "run", "selective"), 3)
        assert "commit backup: No space left on device" in message
        assert "hint: free space on the backup filesystem" in message
        assert listed_ids(site) == []
        assert not list((site / "backups/selective").iterdir())


def test_a_read_only_backup_dir_fails_check_and_run_with_the_drop_in_to_add(
    site: Path
) -> None:
    with filesystems.tmpfs(site / "backups") as mount:
        (mount / "selective").mkdir(mode=0o700)
        filesystems.remount_read_only(mount)
        check = trackerbackup(site, "check")
        run = trackerbackup(site, "run", "selective")
    assert "Read-only file system" in fails(check, 3) + check.stdout
    assert f"PROBLEM: write in general.backup_dir: Read-only file system [{mount}]" \
        in check.stdout
    message = fails(run, 3)
    assert "Read-only file system" in message
    assert "ReadWritePaths=<backup_dir>" in message
