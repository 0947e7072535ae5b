"""Artifacts stream through compressor and hashes, and are verified by reading them back."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest
import zstandard

from trackerbackup.errors import BackupFailed
from trackerbackup.stream import ArtifactWriter, open_raw, verify_artifact

DATA = bytes(range(256)) * 40_000  # 10 MB, written in pieces


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
def test_round_trip_and_hashes(tmp_path: Path, compression: str) -> None:
    path = tmp_path / "artifact"
    with ArtifactWriter(path, compression, 3) as writer:
        for start in range(0, len(DATA), 65_536):
            writer.write(DATA[start:start + 65_536])
    info = writer.info
    assert info is not None
    assert info.raw_size == len(DATA)
    assert info.raw_sha256 == hashlib.sha256(DATA).hexdigest()
    assert info.size == path.stat().st_size
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    with open_raw(path, compression) as reader:
        assert reader.read() == DATA
    verify_artifact(path, info)


def test_standard_tools_can_read_the_artifacts(tmp_path: Path) -> None:
    with ArtifactWriter(tmp_path / "a.zst", "zstd", 3) as zwriter:
        zwriter.write(DATA)
    with ArtifactWriter(tmp_path / "a.gz", "gzip", 6) as gwriter:
        gwriter.write(DATA)
    assert zstandard.ZstdDecompressor().decompressobj().decompress(
        (tmp_path / "a.zst").read_bytes()) == DATA
    assert gzip.decompress((tmp_path / "a.gz").read_bytes()) == DATA


def test_verify_detects_a_flipped_byte(tmp_path: Path) -> None:
    path = tmp_path / "a.zst"
    with ArtifactWriter(path, "zstd", 3) as writer:
        writer.write(DATA)
    assert writer.info is not None
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(BackupFailed, match="differ"):
        verify_artifact(path, writer.info)


def test_an_aborted_writer_records_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), ArtifactWriter(tmp_path / "a", "zstd", 3) as writer:
        writer.write(b"partial")
        raise RuntimeError("source failed")
    assert writer.info is None


def test_never_overwrites_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        ArtifactWriter(tmp_path / "a", "none", 3)
    assert (tmp_path / "a").read_bytes() == b"keep"


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
def test_verify_reads_every_stored_byte_also_after_the_stream_ends(
    tmp_path: Path, compression: str
) -> None:
    path = tmp_path / "a"
    with ArtifactWriter(path, compression) as out:
        out.write(b"payload " * 5000)
    assert out.info is not None
    verify_artifact(path, out.info)  # intact: one pass, both hashes match
    with open(path, "ab") as handle:
        handle.write(b"appended later")

    with pytest.raises(BackupFailed, match="stored bytes differ"):
        verify_artifact(path, out.info)
