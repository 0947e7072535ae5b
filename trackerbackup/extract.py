"""Safe, faithful extraction of the tar archives trackerbackup writes (sources/files.py).

`extract(archive, compression, target, ...)` streams the stored artifact through the same
decompressor as `stream.open_raw`, through tarfile in stream mode, into `target`; memory
stays flat whatever the size of the archive (it grows only with the number of
directories, symlinks and files remembered for hard links, never with their bytes).

Safe by construction (the rules in extract_rules.py, the disk side in extract_tree.py):
nothing is ever written outside `target`, whatever the archive holds and whatever symlinks
the target already has. A member the archive should not hold is UnsafeArchiveMember
(exit 1: the backup is not restorable as it is); a target in the way (a symlink as target,
a symlink or file where a directory must go, a directory where a file must go, no
permission, no space) is EnvironmentProblem (exit 3: fix the target and run again).

Faithful: numeric owners (no name lookup), modes with setgid directories, symlinks as
links, hard links within the archive, empty directories, mtimes to the nanosecond.

When it fails, extraction stops at the failing member: the members before it are complete
and in place (each file was renamed into place only after its fsync), the failing file's
temporary file is removed, and new directories keep mode 0700 (root-owned): their own
owner, mode and mtime are applied only at the end. Parents the archive does not hold
(opt/ above opt/torrust/) are created 0755, root-owned. Only a SIGKILL can leave a temporary
file, named `.trackerbackup-extract-<random>.tmp` in its directory. Run the restore again
(or into a fresh target): a second run replaces what the first one wrote.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import stat
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

import zstandard

from trackerbackup.atomic import fsync_dir
from trackerbackup.errors import BackupFailed, EnvironmentProblem, UnsafeArchiveMember
from trackerbackup.extract_rules import BoundedTarInfo, Kind, Member, MemberRules, Parts
from trackerbackup.extract_tree import Obstacle, Tree, lstat, open_root
from trackerbackup.stream import CHUNK, open_raw

OP = "extract archive"


@dataclass(frozen=True)
class Action:
    """One step of a dry run, in archive order."""

    kind: Kind
    path: Path  # where it lands
    member: str  # the archive name
    detail: str  # owner and mode, size, or link value
    replaces: bool  # an existing entry of that name is replaced

    def __str__(self) -> str:
        return f"{self.kind.value} {self.path} {self.detail}" + \
            (" (replaces the existing one)" if self.replaces else "")


@dataclass
class ExtractReport:
    target: Path
    dry_run: bool
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    bytes: int = 0  # file content written (or to be written in a dry run)
    replaced: int = 0  # files and links that replaced an existing entry
    skipped: int = 0  # members left out by `only` or `strip_prefix`
    unmatched: tuple[str, ...] = ()  # `only` paths that matched no member: an error to report
    raw_size: int = 0  # the decompressed archive, to compare with the manifest
    raw_sha256: str = ""
    actions: list[Action] = field(default_factory=list)  # dry run only

    @property
    def links(self) -> int:
        return self.symlinks + self.hardlinks


def extract(archive: Path, compression: str, target: Path, *, only: Sequence[str] = (),
            allowed_setuid: frozenset[str] = frozenset(), dry_run: bool = False,
            strip_prefix: str = "") -> ExtractReport:
    """Extract `archive` (compressed with `compression`: zstd, gzip or none) into `target`.

    `target` must be a directory or absent (then created 0700; its parent must exist); a
    symlink is refused. Member names are host paths: 'opt/torrust/x' lands in
    target/opt/torrust/x, or in target/x with strip_prefix='/opt/torrust' (members outside
    the prefix are skipped). `only`: archive paths ('/opt/torrust/storage/tracker/etc') to
    restore, each with everything under it. `allowed_setuid`: archive paths of the files
    that may keep a setuid/setgid bit. `dry_run`: nothing is written (not even the target);
    the report lists the actions, and the same refusals are raised.
    """
    rules = MemberRules(str(target), only=only, strip_prefix=strip_prefix,
                        allowed_setuid=allowed_setuid)
    report = ExtractReport(target=target, dry_run=dry_run)
    with _HashingReader.open(archive, compression) as raw, _open_tar(raw, archive) as tar:
        root, created = _open_target(target, dry_run)  # once the archive is known readable
        tree = Tree(root)
        try:
            extractor = _Extractor(tree, rules, report)
            for info in _members(tar, archive):
                extractor.add(info, _content(tar, info, archive))
            extractor.finish(target)
        finally:
            tree.close()
        raw.drain()
    if created:
        fsync_dir(target.parent)
    report.raw_size, report.raw_sha256 = raw.size, raw.digest.hexdigest()
    report.unmatched = rules.unmatched()
    return report


class _HashingReader:
    """The decompressed archive; counts and hashes what is read. A read failure is the
    archive's (exit 1), never confused with a failure to write into the target."""

    def __init__(self, archive: Path, stream: IO[bytes]) -> None:
        self._archive = archive
        self._stream = stream
        self.digest = hashlib.sha256()
        self.size = 0

    @classmethod
    @contextlib.contextmanager
    def open(cls, archive: Path, compression: str) -> Iterator[_HashingReader]:
        try:
            stream = open_raw(archive, compression)
        except OSError as error:
            raise BackupFailed(f"cannot open the archive: {error.strerror}", op=OP,
                               path=str(archive)) from error
        with stream:
            yield cls(archive, stream)

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._stream.read(size)
        except (OSError, EOFError, zstandard.ZstdError) as error:
            raise _unreadable(self._archive, error) from error
        self.digest.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        """Read the rest (the end-of-archive blocks and padding), so the hash covers the
        whole stream as the manifest's raw_sha256 does."""
        while self.read(CHUNK):
            pass


def _unreadable(archive: Path, error: BaseException) -> BackupFailed:
    return BackupFailed(f"the archive is damaged or truncated: {error}", op=OP,
                        path=str(archive), hint="run 'trackerbackup verify' on this backup")


def _open_tar(raw: _HashingReader, archive: Path) -> tarfile.TarFile:
    """Stream mode: forward only, one member at a time (reads the first header)."""
    try:
        return tarfile.open(fileobj=cast(IO[bytes], raw), mode="r|", bufsize=CHUNK,
                            tarinfo=BoundedTarInfo)
    except (tarfile.TarError, EOFError) as error:
        raise _unreadable(archive, error) from error


def _members(tar: tarfile.TarFile, archive: Path) -> Iterator[tarfile.TarInfo]:
    while True:
        try:
            info = tar.next()
        except (tarfile.TarError, EOFError) as error:
            raise _unreadable(archive, error) from error
        if info is None:
            return
        # A stream-mode TarFile keeps every header it read (memory growing with the member
        # count); we never look back. `members`, what getmembers() returns, is not in typeshed.
        tar.members.clear()  # type: ignore[attr-defined]
        yield info


def _content(tar: tarfile.TarFile, info: tarfile.TarInfo, archive: Path) -> Iterator[bytes]:
    """A file member's content in chunks, read lazily (a dry run never reads it)."""
    if not info.isreg():
        return
    try:
        handle = tar.extractfile(info)
        while handle is not None and (chunk := handle.read(CHUNK)):
            yield chunk
    except (tarfile.TarError, EOFError) as error:
        raise _unreadable(archive, error) from error


def _open_target(target: Path, dry_run: bool) -> tuple[int | None, bool]:
    try:
        return open_root(target, create=not dry_run)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR) and target.is_symlink():
            raise EnvironmentProblem(
                "the target is a symlink: extraction never writes through one", op=OP,
                path=str(target), hint="give the directory it points to, or a new one"
            ) from error
        raise _target_problem(error, target, "open or create the target directory") from error


def _target_problem(error: OSError, path: Path, what: str) -> EnvironmentProblem:
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        hint = "free space on the target's filesystem, or restore elsewhere"
    elif error.errno in (errno.EPERM, errno.EACCES, errno.EROFS):
        hint = "run the restore as root (owners are restored), on a writable filesystem"
    elif error.errno == errno.ENOENT and what.startswith("open or create"):
        hint = "create the target's parent directory first"
    else:
        hint = "check the target directory and its filesystem"
    return EnvironmentProblem(f"cannot {what}: {error.strerror or error}", op=OP,
                              path=str(path), hint=hint)


class _Extractor:
    """Judges each member against what this run extracted and what the target holds,
    then has the tree write it (or, in a dry run, records the action)."""

    def __init__(self, tree: Tree, rules: MemberRules, report: ExtractReport) -> None:
        self._tree = tree
        self._rules = rules
        self._report = report
        self._symlinks: set[str] = set()  # made by this run: never written through
        self._files: set[str] = set()  # made by this run: what a hard link may point to
        self._directories: dict[Parts, Member] = {}  # metadata applied by `finish`

    def add(self, info: tarfile.TarInfo, content: Iterator[bytes]) -> None:
        member = self._rules.check(info)
        if member is None:
            self._report.skipped += 1
            return
        self._refuse_through_own_entries(member)
        if member.kind is Kind.HARDLINK and member.link not in self._files:
            raise UnsafeArchiveMember(
                member.name, f"a hard link to {info.linkname!r}, which is not a file "
                             "extracted earlier in this run",
                hint="with --only, include the file it links to; otherwise the archive "
                     "was altered: run 'trackerbackup verify'")
        path = self._report.target.joinpath(*member.parts)
        try:
            self._place(member, path, content)
        except Obstacle as obstacle:
            raise self._obstacle(member, obstacle) from None
        except OSError as error:
            raise _target_problem(error, path, f"{member.kind.value} {member.name}") from error
        self._remember(member)

    def _refuse_through_own_entries(self, member: Member) -> None:
        """Checked before the disk (which refuses them too): the parents of a member, and
        a directory member itself, must not be a symlink or file this run made."""
        last = len(member.parts) if member.kind is Kind.DIR else len(member.parts) - 1
        for depth in range(1, last + 1):
            prefix = "/".join(member.parts[:depth])
            if prefix in self._symlinks:
                raise UnsafeArchiveMember(
                    member.name, f"it would be written through {prefix}, a symlink this "
                                 "archive created earlier")
            if prefix in self._files:
                raise UnsafeArchiveMember(
                    member.name, f"{prefix}, a file this archive created earlier, is on "
                                 "its path")

    def _place(self, member: Member, path: Path, content: Iterator[bytes]) -> None:
        dry_run = self._report.dry_run
        if not member.parts:  # the target itself
            self._directories[()] = member
            self._record(member, path, replaces=False)
            return
        parent = self._tree.parent(member.parts, create=not dry_run)
        existing = lstat(parent, member.parts[-1]) if parent is not None else None
        if existing is not None:
            self._check_replaceable(member, path, existing.st_mode)
        replaces = existing is not None and member.kind is not Kind.DIR
        self._record(member, path, replaces)
        if dry_run or parent is None:
            return
        if member.kind is Kind.DIR:
            if existing is None:
                self._tree.mkdir(parent, member.parts)
            self._directories[member.parts] = member
        elif member.kind is Kind.FILE:
            self._report.bytes += self._tree.write_file(parent, member, content)
        elif member.kind is Kind.SYMLINK:
            self._tree.symlink(parent, member)
        elif not self._tree.hardlink(parent, member, tuple(member.link.split("/"))):
            raise EnvironmentProblem(
                f"the file {member.link} that {member.name} links to is no longer a "
                "regular file: something changed the target during the extraction", op=OP,
                path=str(path), hint="restore into a directory nothing else writes to")

    def _check_replaceable(self, member: Member, path: Path, mode: int) -> None:
        if member.kind is Kind.DIR and stat.S_ISLNK(mode):
            raise self._obstacle(member, Obstacle(member.parts, mode))
        if member.kind is Kind.DIR and not stat.S_ISDIR(mode):
            raise EnvironmentProblem(
                f"member {member.name} is a directory, but the target has something else "
                "there", op=OP, path=str(path), hint="move it away, then run again")
        if member.kind is not Kind.DIR and stat.S_ISDIR(mode):
            raise EnvironmentProblem(
                f"member {member.name} is not a directory, but the target has a directory "
                "there", op=OP, path=str(path), hint="move it away, then run again")

    def _record(self, member: Member, path: Path, replaces: bool) -> None:
        report = self._report
        report.replaced += replaces
        if member.kind is Kind.DIR:
            report.dirs += 1
        elif member.kind is Kind.FILE:
            report.files += 1
            if report.dry_run:
                report.bytes += member.size
        elif member.kind is Kind.SYMLINK:
            report.symlinks += 1
        else:
            report.hardlinks += 1
        if report.dry_run:
            report.actions.append(Action(member.kind, path, member.name,
                                         _detail(member), replaces))

    def _remember(self, member: Member) -> None:
        self._symlinks.discard(member.relpath)
        self._files.discard(member.relpath)
        if member.kind is Kind.SYMLINK:
            self._symlinks.add(member.relpath)
        elif member.kind in (Kind.FILE, Kind.HARDLINK):
            self._files.add(member.relpath)

    def _obstacle(self, member: Member, obstacle: Obstacle) -> EnvironmentProblem:
        where = self._report.target.joinpath(*obstacle.parts)
        if stat.S_ISLNK(obstacle.mode):
            message = (f"{where} is a symlink already in the target: member {member.name} "
                       "is never written through it")
        else:
            message = f"{where} is not a directory, but member {member.name} needs one there"
        return EnvironmentProblem(message, op=OP, path=str(where),
                                  hint="move it away (or restore into an empty directory), "
                                       "then run again")

    def finish(self, target: Path) -> None:
        if self._report.dry_run:
            return
        try:
            self._tree.finish(self._directories)
        except Obstacle as obstacle:
            raise EnvironmentProblem(
                "a directory was replaced during the extraction", op=OP,
                path=str(target.joinpath(*obstacle.parts)),
                hint="restore into a directory nothing else writes to") from None
        except OSError as error:
            raise _target_problem(error, target, "set the directories' metadata") from error


def _detail(member: Member) -> str:
    owner = f"{member.uid}:{member.gid}"
    if member.kind is Kind.FILE:
        return f"{member.size} bytes {owner} {member.mode:04o}"
    if member.kind is Kind.DIR:
        return f"{owner} {member.mode:04o}"
    if member.kind is Kind.SYMLINK:
        return f"-> {member.link} {owner}"
    return f"=> {member.link}"
