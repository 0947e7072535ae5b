"""Tar member headers, encoded by hand: the bytes `tarfile` writes in PAX format, faster.

`tarfile.TarInfo.tobuf(PAX_FORMAT)` costs about 150 µs per member in pure Python (a copy
of the TarInfo, dicts, per-field helpers, struct round trips) and `TarFile` keeps every
TarInfo it wrote in a list: with tens of thousands of small files that was most of a
storage run, and its memory grew with the tree. `header` gives the same bytes (checked
byte for byte against `tarfile` in tests/unit/sources/test_tarheader.py) for the member
kinds trackerbackup writes: a ustar block, preceded by a PAX extended header (`x`) only
when a field does not fit ustar: a name or link target over 100 bytes or not ASCII
(non-UTF-8 names go as `hdrcharset=BINARY`, as tarfile does), a user or group name over
32 characters or not ASCII, an id over 8**7 - 1, a size over 8 GiB, or an mtime that is
not a whole second. Sub-second mtimes are kept (a restore gives back the exact times, as
GNU tar's PAX format does); the price is one extra 1 KiB header per file with such an
mtime, which zstd compresses to a few bytes.
"""

from __future__ import annotations

import struct
from functools import cache

BLOCK = 512
RECORD = 20 * BLOCK  # the archive ends on a whole record, as tar -b20 (and tarfile) do
REGTYPE, LNKTYPE, SYMTYPE, DIRTYPE, XHDTYPE = b"0", b"1", b"2", b"5", b"x"
PAX_NAME = b"././@PaxHeader"  # tarfile's (and star's) name for an extended header
_MAGIC = b"ustar\x0000"
# name mode uid gid size mtime checksum type linkname magic+version uname gname, then
# devmajor, devminor, prefix and the padding to 512, all zeros. `s` fields are cut to
# their length or padded with NULs (a number's terminating NUL is that padding).
_USTAR = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s183x")
_CHECKSUM = slice(148, 156)


def padding(size: int) -> bytes:
    """The zeros that complete a member's data of `size` bytes to whole blocks."""
    return bytes(-size % BLOCK)


def header(name: str, typeflag: bytes, mode: int, uid: int, gid: int, size: int,
           mtime: int | float, linkname: str = "", uname: str = "",
           gname: str = "") -> bytes:
    """The header blocks of one member (a directory's name gets its trailing '/')."""
    if typeflag == DIRTYPE and not name.endswith("/"):
        name += "/"
    pax: dict[str, str] = {}
    fields = (_text(pax, "path", name, 100), _text(pax, "linkpath", linkname, 100),
              _text(pax, "uname", uname, 32), _text(pax, "gname", gname, 32))
    ids = (_number(pax, "uid", uid, 8), _number(pax, "gid", gid, 8))
    sized = (_number(pax, "size", size, 12), _number(pax, "mtime", mtime, 12))
    block = _block(fields[0], mode, *ids, *sized, typeflag, fields[1], fields[2], fields[3])
    return (_pax_header(pax) + block) if pax else block


def _text(pax: dict[str, str], key: str, value: str, length: int) -> bytes:
    try:
        raw = value.encode("ascii")
    except UnicodeEncodeError:
        pax[key] = value
        return value.encode("ascii", "replace")
    if len(raw) > length:
        pax[key] = value
    return raw


def _number(pax: dict[str, str], key: str, value: int | float, digits: int) -> int:
    whole = round(value) if isinstance(value, float) else value
    if not 0 <= whole < 8 ** (digits - 1):
        pax[key] = str(value)
        return 0
    if isinstance(value, float):
        pax[key] = str(value)
    return whole


def _block(name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int,
           typeflag: bytes, linkname: bytes, uname: bytes, gname: bytes) -> bytes:
    block = bytearray(_USTAR.pack(
        name, b"%07o" % (mode & 0o7777), b"%07o" % uid, b"%07o" % gid, b"%011o" % size,
        b"%011o" % mtime, b"        ", typeflag, linkname, _MAGIC, uname, gname))
    block[_CHECKSUM] = b"%06o\0 " % sum(block)
    return bytes(block)


def _pax_header(pax: dict[str, str]) -> bytes:
    """A PAX extended header (`x`) with `pax`'s records, in their order."""
    binary = any(not _utf8(value) for value in pax.values())
    records = [b"21 hdrcharset=BINARY\n"] if binary else []
    for keyword, value in pax.items():
        record = b"%s=%s\n" % (keyword.encode("ascii"),
                               value.encode("utf-8", "surrogateescape"))
        records.append(b"%d %s" % (_record_length(len(record)), record))
    payload = b"".join(records)
    return _pax_block(len(payload)) + payload + padding(len(payload))


@cache
def _pax_block(size: int) -> bytes:
    """An extended header's own block depends on its payload's size only (a few sizes
    recur: most payloads are one `mtime` record)."""
    return _block(PAX_NAME, 0, 0, 0, size, 0, XHDTYPE, b"", b"", b"")


def _record_length(body: int) -> int:
    """A record's length counts its own decimal digits and the space after them."""
    length = body + 1
    while length != body + 1 + len(str(length)):
        length = body + 1 + len(str(length))
    return length


def _utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
