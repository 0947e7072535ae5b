"""Which filesystem a path is on, and what that means for a copy of a file on it.

On XFS and btrfs `copy_file` clones the file (reflink) in one call, before any chunked
copy runs: tests of the chunked copy ask for it (`reflink=False`), tests of the method
expect what the filesystem offers (`expected_copy_method`), and the end-to-end tests that
must catch the tracker paused for a copy say why they skip where a clone makes that pause
too short to catch (`skip_where_copies_are_clones`).

And small real filesystems, so that the kernel, not a fake, says "No space left on
device" or "Read-only file system": `tmpfs`, `remount_read_only` (mounting needs root
with CAP_SYS_ADMIN; where that is missing the test is skipped).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REFLINK_FILESYSTEMS = frozenset({"xfs", "btrfs"})  # XFS made with reflink=1, the default


def filesystem_type(path: Path) -> str:
    """The type of the filesystem holding `path` (the deepest mount point above it), as
    /proc/self/mountinfo names it: ext4, xfs, btrfs, tmpfs, overlay, ..."""
    target = os.path.realpath(path)
    best, kind = "", ""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, after = line.partition(" - ")
        mount_point = fields.split()[4].replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, kind = mount_point, after.split()[0]
    return kind


def clones_files(path: Path) -> bool:
    """True where `copy_file` clones instead of copying chunk by chunk (XFS, btrfs)."""
    return filesystem_type(path) in REFLINK_FILESYSTEMS


def expected_copy_method(path: Path) -> str:
    """What `copy_file` reports for a copy within the filesystem of `path`."""
    return "reflink" if clones_files(path) else "copy_file_range"


def skip_where_copies_are_clones(path: Path) -> None:
    """Skip the calling test where `path` is on XFS or btrfs: there the copy the tracker
    is paused for is one reflink, and the pause lasts milliseconds, too short for a test
    to act (signal, stop) inside it."""
    if clones_files(path):
        pytest.skip(f"{path} is on {filesystem_type(path)}, which clones files: the tracker "
                    "is paused for milliseconds, too short to act inside the pause")


@contextmanager
def tmpfs(path: Path, *options: str) -> Iterator[Path]:
    """A tmpfs mounted on `path` (created) for the block, e.g. tmpfs(p, "size=256k")."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(("mode=0700", *options)), "tmpfs", str(path)],
        capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)


def remount_read_only(path: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
