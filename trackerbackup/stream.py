"""Streaming artifact files: data -> compressor -> sha256 -> file, with flat memory.

An `ArtifactWriter` is a write-only binary stream. It hashes the raw data (what a restore
gets back) and the stored bytes (what lies on disk), fsyncs on close, and describes itself
as an `ArtifactInfo` for the manifest. `verify_artifact` reads a stored artifact back
through the decompressor and checks both hashes.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, cast

import zstandard

from trackerbackup.errors import BackupFailed
from trackerbackup.log import Progress
from trackerbackup.safefs import disk_problem

CHUNK = 1 << 20
# zstd's memory stays bounded whatever the core count and level (a backup runs beside the
# tracker): at most this many workers, each with jobs of this size and a window of at most
# 2**ZSTD_MAX_WINDOW_LOG bytes (level 3's own window), ~8 MiB each at level 3.
ZSTD_WORKERS = 2
ZSTD_JOB_BYTES = 2 << 20
ZSTD_MAX_WINDOW_LOG = 21


class Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...
SUFFIX = {"zstd": ".zst", "gzip": ".gz", "none": ""}


@dataclass(frozen=True)
class ArtifactInfo:
    name: str
    size: int  # bytes on disk
    sha256: str  # of the bytes on disk
    raw_size: int  # bytes before compression
    raw_sha256: str  # of the bytes before compression
    compression: str

    def to_manifest(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "sha256": self.sha256,
            "raw_size": self.raw_size,
            "raw_sha256": self.raw_sha256,
            "compression": self.compression,
        }


class _HashingFile(io.RawIOBase):
    """The bottom of the chain: counts, hashes and writes the stored bytes."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._handle.write(view)
        self.digest.update(view)
        self.size += len(view)
        return len(view)


class ArtifactWriter(io.RawIOBase):
    """Write raw bytes; they land compressed in `path`. Use as a context manager."""

    def __init__(self, path: Path, compression: str = "zstd", level: int = 3,
                 expected_bytes: int | None = None) -> None:
        super().__init__()
        self._progress = Progress(f"writing {path.name}", expected_bytes)
        self.path = path
        self.compression = compression
        self._handle = _create(path)
        self._stored = _HashingFile(self._handle)
        self._raw_digest = hashlib.sha256()
        self._raw_size = 0
        self._compressor: Any = self._open_compressor(compression, level)
        self.info: ArtifactInfo | None = None

    def _open_compressor(self, compression: str, level: int) -> Any:
        if compression == "zstd":
            return zstd_compressor(level).stream_writer(cast(IO[bytes], self._stored),
                                                        closefd=False)
        if compression == "gzip":
            return gzip.GzipFile(fileobj=self._stored, mode="wb", compresslevel=min(level, 9),
                                 mtime=0)
        if compression == "none":
            return self._stored
        raise ValueError(f"unknown compression {compression!r}")

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._raw_digest.update(view)
        self._raw_size += len(view)
        try:
            self._compressor.write(view)
        except OSError as error:  # only the artifact file is written below this call
            raise disk_problem(error, "write the backup", self.path) from error
        self._progress.advance(len(view))
        return len(view)

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self.info is None and not self._handle.closed:
                self._finish()
        except OSError as error:
            raise disk_problem(error, "write the backup", self.path) from error
        finally:
            _close_quietly(self._handle)
            super().close()

    def abort(self) -> None:
        """Close without finishing: the file is incomplete and must be discarded."""
        self.info = None
        _close_quietly(self._handle)
        super().close()

    def _finish(self) -> None:
        self._progress.finish()
        if self._compressor is not self._stored:
            if self.compression == "zstd":
                self._compressor.flush(zstandard.FLUSH_FRAME)
            self._compressor.close()
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.info = ArtifactInfo(
            name=self.path.name,
            size=self._stored.size,
            sha256=self._stored.digest.hexdigest(),
            raw_size=self._raw_size,
            raw_sha256=self._raw_digest.hexdigest(),
            compression=self.compression,
        )

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()


def zstd_compressor(level: int) -> zstandard.ZstdCompressor:
    """A multi-threaded compressor in bounded memory; the zstd frame stays standard."""
    window_log = min(zstandard.ZstdCompressionParameters.from_level(level).window_log,
                     ZSTD_MAX_WINDOW_LOG)
    workers = min(os.cpu_count() or 1, ZSTD_WORKERS)
    params = zstandard.ZstdCompressionParameters.from_level(
        level, window_log=window_log, threads=workers, job_size=ZSTD_JOB_BYTES,
        write_checksum=1)
    return zstandard.ZstdCompressor(compression_params=params)


def _close_quietly(handle: IO[bytes]) -> None:
    """Close after a failure: a flush error here (the disk still full) would hide the first."""
    with contextlib.suppress(OSError):
        handle.close()


def _create(path: Path) -> IO[bytes]:
    """A new file, 0600 whatever the umask; never an existing file or a planted symlink."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise
    except OSError as error:
        raise disk_problem(error, "write the backup", path) from error
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb")


def open_raw(path: Path, compression: str) -> IO[bytes]:
    """The decompressed content of a stored artifact, as a stream."""
    return _decompressing(open(path, "rb"), compression)


def _decompressing(handle: IO[bytes], compression: str) -> IO[bytes]:
    if compression == "zstd":
        return cast(IO[bytes], zstandard.ZstdDecompressor().stream_reader(handle, closefd=True))
    if compression == "gzip":
        return cast(IO[bytes], gzip.GzipFile(fileobj=handle, mode="rb"))
    return handle


class _HashingReader(io.RawIOBase):
    """Hashes the stored bytes as the decompressor reads them: one pass over the file."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self.digest = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self._handle.readinto(buffer)  # type: ignore[attr-defined]
        self.digest.update(memoryview(buffer)[:count])
        self.size += count
        return int(count)

    def close(self) -> None:
        self._handle.close()
        super().close()


def verify_artifact(path: Path, info: ArtifactInfo) -> None:
    """Read the artifact back from disk, once, and check its stored and raw sizes and
    hashes (the stored bytes are hashed as the decompressor consumes them)."""
    raw = hashlib.sha256()
    raw_size = 0
    undecodable: Exception | None = None
    buffer = bytearray(CHUNK)  # one buffer reused: no new object per chunk
    view = memoryview(buffer)
    try:
        stored = _HashingReader(open(path, "rb"))  # noqa: SIM115 - closed with the reader
        with _decompressing(cast(IO[bytes], io.BufferedReader(stored, CHUNK)),
                            info.compression) as reader:
            try:
                while count := reader.readinto(buffer):  # type: ignore[attr-defined]
                    raw.update(view[:count])
                    raw_size += count
            except (EOFError, zstandard.ZstdError, gzip.BadGzipFile) as error:
                undecodable = error
            while stored.readinto(buffer):  # the rest: after the stream's end, or its damage
                pass
    except OSError as error:
        raise disk_problem(error, "verify artifact", path) from error
    if stored.size != info.size or stored.digest.hexdigest() != info.sha256:
        raise BackupFailed("stored bytes differ from what was written", op="verify artifact",
                           path=str(path), hint="check the disk under the backup directory")
    if undecodable is not None:
        raise BackupFailed(f"cannot decompress: {undecodable}", op="verify artifact",
                           path=str(path)) from undecodable
    if raw_size != info.raw_size or raw.hexdigest() != info.raw_sha256:
        raise BackupFailed("decompressed content differs from what was written",
                           op="verify artifact", path=str(path))


def copy_into(source: IO[bytes], writer: Writable) -> int:
    copied = 0
    while chunk := source.read(CHUNK):
        writer.write(chunk)
        copied += len(chunk)
    return copied


def expand_artifact(path: Path, compression: str, raw_size: int, raw_sha256: str,
                    dest: Path) -> None:
    """Decompress a stored artifact into `dest` (created 0600, fsynced), streaming, and
    check its raw size and sha256 on the way; `dest` is removed on any failure."""
    digest = hashlib.sha256()
    written = 0
    try:
        with open_raw(path, compression) as reader, \
                open(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600),
                     "wb") as out:
            while chunk := reader.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                written += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        if written != raw_size or digest.hexdigest() != raw_sha256:
            raise BackupFailed("decompressed content differs from the manifest",
                               op="expand artifact", path=str(path),
                               hint="the backup is damaged: use another one")
    except (EOFError, zstandard.ZstdError) as error:
        dest.unlink(missing_ok=True)
        raise BackupFailed(f"cannot decompress: {error}", op="expand artifact",
                           path=str(path)) from error
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
