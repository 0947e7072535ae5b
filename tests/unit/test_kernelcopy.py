"""kernelcopy.py: exact copies by the fastest method, a check that can abandon the copy,
and the fault point before each chunk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.kit.filesystems import expected_copy_method
from trackerbackup import kernelcopy
from trackerbackup.errors import BackupFailed


def test_copy_file_copies_exactly_and_says_how(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    target = tmp_path / "target"
    with open(source, "rb") as src, open(target, "wb") as dst:
        method = kernelcopy.copy_file(src.fileno(), dst.fileno(), source.stat().st_size)

    assert target.read_bytes() == source.read_bytes()
    assert method == expected_copy_method(tmp_path)  # reflink on XFS and btrfs


def test_copy_file_stops_when_the_check_says_so(tmp_path: Path) -> None:
    """The check runs between chunks (a reflink, on XFS or btrfs, has none)."""
    source = tmp_path / "source"
    source.write_bytes(b"x" * (3 * kernelcopy.COPY_CHUNK_BYTES))

    class Enough(Exception):
        pass

    def stop() -> None:
        raise Enough

    with open(source, "rb") as src, open(tmp_path / "target", "wb") as dst, \
            pytest.raises(Enough):
        kernelcopy.copy_file(src.fileno(), dst.fileno(), source.stat().st_size, stop,
                             reflink=False)

    assert (tmp_path / "target").stat().st_size == kernelcopy.COPY_CHUNK_BYTES


def test_chunked_copy_calls_the_fault_point_before_every_chunk(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.write_bytes(os.urandom(10_000))
    offsets: list[int] = []
    with open(source, "rb") as src, open(tmp_path / "target", "wb") as dst:
        method = kernelcopy.copy_file(src.fileno(), dst.fileno(), 10_000, reflink=False,
                                      before_chunk=offsets.append, chunk_bytes=4096)

    assert method == "copy_file_range"
    assert offsets == [0, 4096, 8192]
    assert (tmp_path / "target").read_bytes() == source.read_bytes()


def test_a_source_that_ends_early_is_an_error_unless_until_eof(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.write_bytes(b"y" * 5000)
    with open(source, "rb") as src, open(tmp_path / "strict", "wb") as dst, \
            pytest.raises(BackupFailed, match="ended at byte 5000 of 9000"):
        kernelcopy.copy_file(src.fileno(), dst.fileno(), 9000, reflink=False)
    with open(source, "rb") as src, open(tmp_path / "lenient", "wb") as dst:
        kernelcopy.copy_file(src.fileno(), dst.fileno(), 9000, reflink=False, until_eof=True)

    assert (tmp_path / "lenient").read_bytes() == b"y" * 5000
