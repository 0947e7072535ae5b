"""Copy a file between descriptors at the fastest the kernel offers.

reflink (FICLONE) where the filesystem shares extents, else `copy_file_range` in chunks,
else `sendfile`. The chunked methods call `check` after each chunk (to abandon a copy
that overruns a budget) and `before_chunk` before each one (a fault point for tests that
force an interleaving of the copy with writers).
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable

from trackerbackup.errors import BackupFailed

COPY_CHUNK_BYTES = 8 * 1024 * 1024
FICLONE = 0x40049409
COPY_UNSUPPORTED = {errno.EXDEV, errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.ENOSYS}

ChunkHook = Callable[[int], None]


def _nothing() -> None:
    return None


def _nothing_at(offset: int) -> None:
    return None


def copy_file(
    source_fd: int,
    target_fd: int,
    size: int,
    check: Callable[[], None] = _nothing,
    *,
    until_eof: bool = False,
    reflink: bool = True,
    before_chunk: ChunkHook = _nothing_at,
    chunk_bytes: int = COPY_CHUNK_BYTES,
) -> str:
    """Copies `size` bytes from offset 0; returns the method used ("reflink", ...).

    A source that ends before `size` is an error, unless `until_eof`: then the copy stops
    there (for files that a checkpoint may legitimately shorten under the copy).
    """
    if reflink:
        try:
            fcntl.ioctl(target_fd, FICLONE, source_fd)
            return "reflink"
        except OSError as error:
            if error.errno not in COPY_UNSUPPORTED:
                raise
    chunks = _Chunks(size, check, until_eof, before_chunk, chunk_bytes)
    try:
        chunks.copy(_copy_file_range, source_fd, target_fd)
        return "copy_file_range"
    except OSError as error:
        if error.errno not in COPY_UNSUPPORTED:
            raise
    # sendfile rewrites from offset 0 whatever copy_file_range may have written.
    chunks.copy(_sendfile, source_fd, target_fd)
    return "sendfile"


class _Chunks:
    def __init__(self, size: int, check: Callable[[], None], until_eof: bool,
                 before_chunk: ChunkHook, chunk_bytes: int) -> None:
        self.size = size
        self.check = check
        self.until_eof = until_eof
        self.before_chunk = before_chunk
        self.chunk_bytes = chunk_bytes

    def copy(self, copy_chunk: Callable[[int, int, int, int], int], source_fd: int,
             target_fd: int) -> None:
        offset = 0
        while offset < self.size:
            self.before_chunk(offset)
            count = min(self.chunk_bytes, self.size - offset)
            copied = copy_chunk(source_fd, target_fd, offset, count)
            if copied == 0:
                if self.until_eof:
                    return
                raise BackupFailed(
                    f"the file ended at byte {offset} of {self.size} during the copy",
                    op="copy file")
            offset += copied
            self.check()


def _copy_file_range(source_fd: int, target_fd: int, offset: int, count: int) -> int:
    return os.copy_file_range(source_fd, target_fd, count, offset, offset)


def _sendfile(source_fd: int, target_fd: int, offset: int, count: int) -> int:
    os.lseek(target_fd, offset, os.SEEK_SET)
    return os.sendfile(target_fd, source_fd, offset, count)
