"""What an archive member may do when it is extracted: the rules, without touching the disk.

`MemberRules.check` turns a tar header into a `Member`: where it lands under the target
(path components, never '..'; an absolute name is taken relative to the target, like GNU
tar), its kind and the metadata to restore; or None when the selection (`only`,
`strip_prefix`) leaves it out. Refused with UnsafeArchiveMember (exit 1):

- a '..' component in a name, or a name that is only the target itself but not a directory;
- a device node, FIFO or any other special member (only files, directories, symlinks and
  hard links are restored);
- a setuid or setgid file whose name is not in `allowed_setuid` (setgid directories are
  normal and kept);
- a symlink that could lead outside the target (see `_check_symlink`);
- a hard link whose target lies outside the restored part of the archive (the writer also
  requires it to be a file extracted earlier in the same run);
- a uid or gid that chown would misread ((uid_t)-1 means "leave unchanged").
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import Enum
from pathlib import PurePosixPath
from typing import Self

from trackerbackup.errors import UnsafeArchiveMember, UsageError

Parts = tuple[str, ...]

SETID_BITS = stat.S_ISUID | stat.S_ISGID
MAX_ID = 2**32 - 2  # (uid_t)-1 would make chown keep root's ownership
HEADER_LIMIT = 1 << 20  # a PAX header or GNU long name; PATH_MAX is 4096
EXTENDED_HEADERS = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                    tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
SPECIAL_KINDS = {tarfile.CHRTYPE: "a character device", tarfile.BLKTYPE: "a block device",
                 tarfile.FIFOTYPE: "a FIFO"}


class Kind(Enum):
    """What a member becomes; the value is the verb shown in a dry run."""

    DIR = "mkdir"
    FILE = "write"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"


@dataclass(frozen=True)
class Member:
    name: str  # as stored in the archive
    parts: Parts  # where it lands, relative to the target; () is the target itself
    kind: Kind
    uid: int
    gid: int
    mode: int  # permission bits, setuid/setgid/sticky included
    mtime_ns: int
    size: int  # content bytes of a file, 0 for the other kinds
    link: str = ""  # a symlink's value, or a hard link's target relative to the target

    @property
    def relpath(self) -> str:
        return "/".join(self.parts)


class BoundedTarInfo(tarfile.TarInfo):
    """Refuses an oversized PAX header or GNU long name before tarfile reads it whole into
    memory: a hostile archive must not exhaust memory with one header."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        info = super().frombuf(buf, encoding, errors)
        if info.type in EXTENDED_HEADERS and info.size > HEADER_LIMIT:
            raise UnsafeArchiveMember(info.name, f"an extended header of {info.size:,} bytes "
                                                 f"(the limit is {HEADER_LIMIT:,})")
        return info


def split_name(name: str, member: str | None = None) -> Parts:
    """The components of a member name (or of the `member`'s hard link target): '/' at the
    start, '' and '.' dropped, '..' refused."""
    what = "its path" if member is None else f"the path it links to ({name!r})"
    if "\0" in name:
        raise UnsafeArchiveMember(member or name, f"a NUL byte in {what}")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise UnsafeArchiveMember(member or name, f"'..' in {what} would lead outside the "
                                                  "target")
    return parts


def _caller_path(path: str, what: str) -> Parts:
    parts = tuple(p for p in path.split("/") if p not in ("", "."))
    if ".." in parts or "\0" in path:
        raise UsageError(f"{what} {path!r} must not contain '..'", op="extract archive",
                         hint="give the path as stored in the backup (the host path)")
    return parts


def _is_under(parts: Parts, prefix: Parts) -> bool:
    return parts[:len(prefix)] == prefix


class MemberRules:
    """The rules for one extraction; remembers which `only` paths matched something."""

    def __init__(self, target: str, *, only: Iterable[str] = (), strip_prefix: str = "",
                 allowed_setuid: Iterable[str] = ()) -> None:
        self.only = tuple(_caller_path(p, "--only path") for p in only)
        self.strip = _caller_path(strip_prefix, "strip prefix")
        self.allowed_setuid = frozenset(_caller_path(p, "setuid path") for p in allowed_setuid)
        # An absolute symlink may point into the target as the operator named it or as the
        # kernel resolves it (a target under a symlinked /opt has two spellings).
        self.target_roots = (PurePosixPath(os.path.abspath(target)),
                             PurePosixPath(os.path.realpath(target)))
        self._matched: set[Parts] = set()

    def unmatched(self) -> tuple[str, ...]:
        return tuple("/".join(p) for p in self.only if p not in self._matched)

    def check(self, info: tarfile.TarInfo) -> Member | None:
        """The member as it will be restored, None when not selected; raises if refused."""
        archive_parts = split_name(info.name)
        parts = self._place(archive_parts)
        if parts is None:
            return None
        kind = _kind(info)
        if not parts and kind is not Kind.DIR:
            raise UnsafeArchiveMember(info.name, "it names the target directory itself")
        if kind is Kind.FILE and info.mode & SETID_BITS \
                and archive_parts not in self.allowed_setuid:
            raise UnsafeArchiveMember(
                info.name, f"a setuid/setgid file (mode {info.mode & 0o7777:04o})",
                hint="setuid and setgid files are restored only when the backup's listing "
                     "names them; check where this one comes from")
        for number, what in ((info.uid, "uid"), (info.gid, "gid")):
            if not 0 <= number <= MAX_ID:
                raise UnsafeArchiveMember(info.name, f"{what} {number} is out of range")
        return Member(name=info.name, parts=parts, kind=kind, uid=info.uid, gid=info.gid,
                      mode=info.mode & 0o7777, mtime_ns=mtime_ns(info),
                      size=info.size if kind is Kind.FILE else 0,
                      link=self._link(info, kind, parts))

    def _place(self, archive_parts: Parts) -> Parts | None:
        if not _is_under(archive_parts, self.strip):
            return None
        if self.only:
            matching = [o for o in self.only if _is_under(archive_parts, o)]
            if not matching:
                return None
            self._matched.update(matching)
        return archive_parts[len(self.strip):]

    def _link(self, info: tarfile.TarInfo, kind: Kind, parts: Parts) -> str:
        if kind is Kind.SYMLINK:
            self._check_symlink(info.name, info.linkname, parts)
            return info.linkname
        if kind is Kind.HARDLINK:
            source = split_name(info.linkname, info.name)
            if not source or not _is_under(source, self.strip):
                raise UnsafeArchiveMember(
                    info.name, f"a hard link to {info.linkname!r}, outside what is restored")
            return "/".join(source[len(self.strip):])
        return ""

    def _check_symlink(self, name: str, value: str, parts: Parts) -> None:
        """A symlink may only lead to somewhere inside the target, wherever it is followed
        from, and whatever other symlinks of the archive it goes through. So:

        - absolute: no '..', and under the target (restoring into a scratch directory thus
          refuses absolute symlinks to the live tree: they would lead out of the copy);
        - relative: the '..' components come first, and no more of them than the link has
          parent directories inside the target. A '..' after a name is refused even when it
          looks harmless, because the name may itself be a symlink ('up/../x' with up -> ..).

        Every directory the '..' climb through was created or opened as a real directory,
        and every name after them is a directory or a symlink checked the same way, so by
        induction no chain of restored links leaves the target.
        """
        if not value or "\0" in value:
            raise UnsafeArchiveMember(name, "a symlink with an empty or NUL-bearing value")
        components = [p for p in value.split("/") if p not in ("", ".")]
        if value.startswith("/"):
            inside = ".." not in components and any(
                _is_under(tuple(components), root.parts[1:]) for root in self.target_roots)
            if not inside:
                raise UnsafeArchiveMember(name, f"a symlink to {value!r}, outside the target")
            return
        climb = next((i for i, p in enumerate(components) if p != ".."), len(components))
        if ".." in components[climb:]:
            raise UnsafeArchiveMember(
                name, f"a symlink to {value!r}: '..' after a name can lead anywhere")
        if climb > len(parts) - 1:
            raise UnsafeArchiveMember(name, f"a symlink to {value!r}, outside the target")


def _kind(info: tarfile.TarInfo) -> Kind:
    if info.isdir():
        return Kind.DIR
    if info.issym():
        return Kind.SYMLINK
    if info.islnk():
        return Kind.HARDLINK
    if info.isreg():
        return Kind.FILE
    what = SPECIAL_KINDS.get(info.type, f"a member of type {info.type!r}")
    raise UnsafeArchiveMember(info.name, f"{what}: only files, directories and links are "
                                         "restored")


def mtime_ns(info: tarfile.TarInfo) -> int:
    """The exact mtime: PAX keeps it as a decimal string, which a float would round."""
    text = info.pax_headers.get("mtime")
    try:
        if text is not None:
            return int(Decimal(text) * 1_000_000_000)
    except InvalidOperation:
        pass
    return int(Decimal(repr(info.mtime)) * 1_000_000_000)
