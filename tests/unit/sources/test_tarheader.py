"""The hand-written tar headers are byte for byte what tarfile writes in PAX format."""

from __future__ import annotations

import tarfile

import pytest

from trackerbackup.sources.tarheader import (
    DIRTYPE,
    LNKTYPE,
    REGTYPE,
    SYMTYPE,
    header,
    padding,
)

BASE = {"name": "opt/torrust/storage/tracker/etc/tracker.toml", "typeflag": REGTYPE,
        "mode": 0o644, "uid": 1000, "gid": 1000, "size": 1234, "mtime": 1764160000,
        "linkname": "", "uname": "torrust", "gname": "torrust"}
CASES: dict[str, dict[str, object]] = {
    "plain ustar": {},
    "sub-second mtime": {"mtime": 1764160000.123456},
    "whole-second float mtime": {"mtime": 1764160000.0},
    "negative mtime": {"mtime": -5},
    "mtime past 2242": {"mtime": 8 ** 11},
    "directory": {"typeflag": DIRTYPE, "name": "opt/torrust/storage", "size": 0,
                  "mode": 0o2775},
    "directory with its slash": {"typeflag": DIRTYPE, "name": "opt/x/", "size": 0},
    "symlink": {"typeflag": SYMTYPE, "size": 0, "linkname": "../etc/tracker.toml"},
    "hard link": {"typeflag": LNKTYPE, "size": 0, "linkname": "opt/torrust/a"},
    "name of 100 bytes": {"name": "n" * 100},
    "name of 101 bytes": {"name": "n" * 101},
    "long name": {"name": "/".join(["directory"] * 40)},
    "long link target": {"typeflag": SYMTYPE, "size": 0, "linkname": "l" * 300},
    "UTF-8 name": {"name": "opt/torrust/storage/caddy/données/ключ.pem"},
    "non-UTF-8 name": {"name": "opt/torrust/storage/log/b\udcffad.log"},
    "non-UTF-8 link target": {"typeflag": SYMTYPE, "size": 0, "linkname": "x\udce9"},
    "long user name": {"uname": "u" * 33},
    "non-ASCII group": {"gname": "grüppe"},
    "unknown owner": {"uname": "", "gname": "", "uid": 123456},
    "uid past 8**7": {"uid": 8 ** 7, "gid": 2 ** 32 - 2},
    "size past 8 GiB": {"size": 8 ** 11 + 1},
    "setuid mode": {"mode": 0o104755},
    "everything at once": {"name": "é" * 200, "linkname": "\udcfe" * 120, "uid": 8 ** 8,
                           "size": 2 ** 40, "mtime": 1.5, "uname": "ü", "gname": "g" * 40,
                           "typeflag": SYMTYPE},
}


def tarfile_bytes(fields: dict[str, object]) -> bytes:
    info = tarfile.TarInfo(str(fields["name"]))
    info.type = fields["typeflag"]  # type: ignore[assignment]
    for key in ("mode", "uid", "gid", "size", "mtime", "linkname", "uname", "gname"):
        setattr(info, key, fields[key])
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


@pytest.mark.parametrize("case", CASES)
def test_header_is_tarfiles_pax_header(case: str) -> None:
    fields = {**BASE, **CASES[case]}
    ours = header(**fields)  # type: ignore[arg-type]
    assert ours == tarfile_bytes(fields)
    assert len(ours) % 512 == 0


def test_ustar_alone_when_everything_fits() -> None:
    assert len(header(**BASE)) == 512  # type: ignore[arg-type]
    assert len(header(**{**BASE, "mtime": 1.25})) == 3 * 512  # type: ignore[arg-type]


@pytest.mark.parametrize("length", range(80, 1100, 7))
def test_pax_record_lengths_around_their_digit_boundaries(length: int) -> None:
    fields = {**BASE, "name": "p" * length}
    assert header(**fields) == tarfile_bytes(fields)  # type: ignore[arg-type]


def test_padding_completes_whole_blocks() -> None:
    assert [len(padding(n)) for n in (0, 1, 511, 512, 513)] == [0, 511, 1, 0, 511]
