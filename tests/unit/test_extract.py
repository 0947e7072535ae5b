"""Extraction of trackerbackup's own archives: faithful round trips, selection, dry run,
failures that leave nothing half-written, and flat memory on a big file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kit.archives import describe, directory, file, snapshot, write_archive
from tests.testbed.tree import TRACKER_UID, create_tree
from trackerbackup.errors import BackupFailed, EnvironmentProblem, UsageError
from trackerbackup.extract import extract
from trackerbackup.extract_rules import Kind
from trackerbackup.sources.files import FileSet, TarWriter
from trackerbackup.stream import SUFFIX, ArtifactInfo, ArtifactWriter

REPO = Path(__file__).resolve().parents[2]


def make_source(root: Path) -> Path:
    """The deployer tree plus what the round trip must also keep: a symbolic link, a 0-byte
    file, a hard link, an empty setgid directory, and an exact mtime on every path."""
    compose = create_tree(root, initial_db=root.parent / f"{root.name}-initial.db")
    os.symlink("tracker.toml", compose / "storage/tracker/etc/current.toml")
    lib = compose / "storage/tracker/lib"
    (lib / "empty.log").write_bytes(b"")
    (lib / "database/shared").write_bytes(b"one inode, two names")
    os.link(lib / "database/shared", lib / "shared-again")
    (lib / "empty-dir").mkdir(mode=0o2770)
    os.chown(lib / "empty-dir", 1000, 1000)
    os.chmod(lib / "empty-dir", 0o2770)
    os.lchown(compose / "storage/tracker/etc/current.toml", TRACKER_UID, TRACKER_UID)
    paths = sorted((Path(top, name) for top, dirs, files in os.walk(root)
                    for name in (*dirs, *files)), key=lambda p: -len(p.parts))
    for number, path in enumerate([*paths, root]):  # deepest first: then parents' mtimes
        # Microseconds: the writer stores st_mtime, a float, which holds no more.
        mtime = 1_600_000_000_123_456_000 + number * 1_000_000_000
        os.utime(path, ns=(mtime, mtime), follow_symlinks=False)
    return root


def census(root: Path) -> tuple[int, int, int, int]:
    """What an archive of the tree at `root` holds: (files, hard links to them, symbolic
    links, directories), `root` included."""
    paths = [root, *root.rglob("*")]
    regular = [p for p in paths if p.is_file() and not p.is_symlink()]
    inodes = {p.stat().st_ino for p in regular}
    directories = [p for p in paths if p.is_dir() and not p.is_symlink()]
    symlinks = [p for p in paths if p.is_symlink()]
    return len(inodes), len(regular) - len(inodes), len(symlinks), len(directories)


def backup(source: Path, archive: Path, compression: str = "zstd") -> ArtifactInfo:
    """The archive trackerbackup's selective type writes for `source`, and what its
    manifest says about it."""
    files = FileSet(roots=(source,), missing=(), exclude_patterns=(), exclude_dirs=())
    with ArtifactWriter(archive, compression) as out:
        writer = TarWriter(out)
        for path in files.walk():
            writer.add(path)
        writer.close()
    assert out.info is not None
    return out.info


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return make_source(tmp_path / "src")


def host_path(path: Path) -> str:
    return str(path).lstrip("/")


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
def test_round_trip_keeps_owners_modes_links_times_and_content(
        tmp_path: Path, source: Path, compression: str) -> None:
    archive = tmp_path / f"files.tar{SUFFIX[compression]}"
    info = backup(source, archive, compression)
    target = tmp_path / "restored"
    report = extract(archive, compression, target, strip_prefix=str(source))
    assert snapshot(target) == snapshot(source)
    lib = target / "opt/torrust/storage/tracker/lib"
    assert (lib / "shared-again").stat().st_ino == (lib / "database/shared").stat().st_ino
    assert describe(target / "opt/torrust/storage/tracker/etc").mode == 0o2770
    assert (lib / "empty-dir").is_dir()
    assert not any((lib / "empty-dir").iterdir())
    files, hardlinks, symlinks, dirs = census(source)
    assert (hardlinks, symlinks) == (1, 1)
    assert (report.files, report.hardlinks, report.symlinks) == (files, hardlinks, symlinks)
    assert report.dirs == dirs  # the source root included: it is the target itself now
    assert report.bytes == sum(p.stat().st_size for p in source.rglob("*")
                               if p.is_file() and not p.is_symlink()) - 20  # linked once
    assert (report.raw_size, report.raw_sha256) == (info.raw_size, info.raw_sha256)
    assert not list(target.rglob(".trackerbackup-extract-*"))


def test_full_host_paths_land_under_the_target(tmp_path: Path, source: Path) -> None:
    archive = tmp_path / "files.tar.zst"
    backup(source, archive)
    target = tmp_path / "restored"
    extract(archive, "zstd", target)
    restored = target / host_path(source)
    assert snapshot(restored) == snapshot(source)
    assert describe(target).mode == 0o700
    assert describe(target / host_path(source.parent)).mode == 0o755  # not in the archive


def test_a_second_run_replaces_everything_in_place(tmp_path: Path, source: Path) -> None:
    archive = tmp_path / "files.tar.zst"
    backup(source, archive)
    target = tmp_path / "restored"
    extract(archive, "zstd", target, strip_prefix=str(source))
    (target / "opt/torrust/.env").write_text("changed since the backup\n")
    report = extract(archive, "zstd", target, strip_prefix=str(source))
    assert report.replaced == report.files + report.links
    assert snapshot(target) == snapshot(source)
    assert not list(target.rglob(".trackerbackup-extract-*"))


def test_only_restores_the_named_subtree(tmp_path: Path, source: Path) -> None:
    archive = tmp_path / "files.tar.zst"
    backup(source, archive)
    target = tmp_path / "restored"
    etc = source / "opt/torrust/storage/tracker/etc"
    report = extract(archive, "zstd", target,
                     only=[str(etc), str(source / "opt/torrust/.env"), "/not/in/archive"])
    restored = sorted(str(p.relative_to(target)) for p in target.rglob("*"))
    etc_name, env_name = host_path(etc), host_path(source / "opt/torrust/.env")
    expected = {etc_name, f"{etc_name}/tracker.toml", f"{etc_name}/current.toml", env_name}
    assert set(restored) - expected == {str(p) for p in Path(etc_name).parents
                                        if str(p) != "."}
    assert snapshot(target / etc_name) == snapshot(etc)
    assert report.unmatched == ("not/in/archive",)
    assert report.files + report.dirs + report.links + report.skipped == sum(census(source))


def test_only_without_the_file_a_hard_link_needs_is_refused(tmp_path: Path,
                                                           source: Path) -> None:
    archive = tmp_path / "files.tar.zst"
    backup(source, archive)
    link = source / "opt/torrust/storage/tracker/lib/shared-again"
    with pytest.raises(BackupFailed, match="include the file it links to"):
        extract(archive, "zstd", tmp_path / "restored", only=[str(link)])


def test_dry_run_lists_every_action_and_writes_nothing(tmp_path: Path, source: Path) -> None:
    archive = tmp_path / "files.tar.zst"
    backup(source, archive)
    target = tmp_path / "restored"
    before = snapshot(tmp_path)
    report = extract(archive, "zstd", target, strip_prefix=str(source), dry_run=True)
    assert snapshot(tmp_path) == before
    assert not target.exists()
    real = extract(archive, "zstd", target, strip_prefix=str(source))
    kinds = [a.kind for a in report.actions]
    assert (kinds.count(Kind.FILE), kinds.count(Kind.DIR)) == (real.files, real.dirs)
    assert [a.path for a in report.actions][:3] == [
        target, target / "opt", target / "opt/torrust"]
    assert report.bytes == real.bytes
    assert not any(a.replaces for a in report.actions)
    toml = next(a for a in report.actions if a.path.name == "tracker.toml")
    toml_stat = (source / "opt/torrust/storage/tracker/etc/tracker.toml").stat()
    assert str(toml) == (f"write {toml.path} {toml_stat.st_size} bytes 1000:1000 "
                         f"{toml_stat.st_mode & 0o7777:04o}")
    link = next(a for a in report.actions if a.kind is Kind.SYMLINK)
    assert str(link) == f"symlink {link.path} -> tracker.toml 1000:1000"
    again = extract(archive, "zstd", target, strip_prefix=str(source), dry_run=True)
    assert sum(a.replaces for a in again.actions) == real.files + real.links
    assert snapshot(target) == snapshot(source)


def test_a_truncated_archive_fails_without_leaving_a_partial_file(tmp_path: Path) -> None:
    big = os.urandom(3 << 20)
    archive = write_archive(tmp_path / "files.tar", [
        directory("data"), file("data/small", b"complete"), file("data/big", big)])
    archive.write_bytes(archive.read_bytes()[:2 << 20])  # cut inside data/big
    target = tmp_path / "restored"
    with pytest.raises(BackupFailed, match="damaged or truncated"):
        extract(archive, "none", target)
    assert (target / "data/small").read_bytes() == b"complete"
    assert sorted(os.listdir(target / "data")) == ["small"]  # no temporary file left
    assert describe(target / "data").mode == 0o700  # its own mode comes only at the end


@pytest.mark.parametrize(("compression", "content"), [
    ("none", b"not a tar archive " * 100),
    ("zstd", b"not a zstd frame " * 100),
    ("gzip", b"not a gzip stream " * 100),
    ("none", b""),
])
def test_an_unreadable_archive_fails_before_the_target_is_created(
        tmp_path: Path, compression: str, content: bytes) -> None:
    archive = tmp_path / "files.tar"
    archive.write_bytes(content)
    with pytest.raises(BackupFailed, match="the archive is damaged or truncated"):
        extract(archive, compression, tmp_path / "restored")
    assert not (tmp_path / "restored").exists()


def test_a_directory_in_the_way_of_a_file_is_an_environment_problem(tmp_path: Path) -> None:
    archive = write_archive(tmp_path / "files.tar", [file("a/b", b"data")])
    (tmp_path / "restored/a/b").mkdir(parents=True)
    with pytest.raises(EnvironmentProblem, match="the target has a directory there"):
        extract(archive, "none", tmp_path / "restored")


def test_caller_paths_with_dotdot_are_usage_errors(tmp_path: Path) -> None:
    archive = write_archive(tmp_path / "files.tar", [file("a")])
    with pytest.raises(UsageError, match=r"must not contain '\.\.'"):
        extract(archive, "none", tmp_path / "restored", only=["opt/../etc"])
    assert not (tmp_path / "restored").exists()


EXTRACT = """
import sys
from pathlib import Path
from trackerbackup.extract import extract
print(extract(Path(sys.argv[1]), "zstd", Path(sys.argv[2])).bytes)
"""

# Linux carries a process's peak RSS across fork and exec: a child of pytest (~100 MB)
# would report pytest's peak. So a small launcher runs the extraction and reports its
# child's peak (getrusage RUSAGE_CHILDREN), which starts from the launcher's few MB.
LAUNCHER = """
import resource, subprocess, sys
done = subprocess.run([sys.executable, "-c", *sys.argv[1:]], check=True,
                      capture_output=True, text=True)
print(done.stdout.strip(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def peak_rss_kib(archive: Path, target: Path) -> tuple[int, int]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", LAUNCHER, EXTRACT, str(archive), str(target)],
        capture_output=True, text=True, check=True, env=env)
    written, rss = result.stdout.split()
    return int(written), int(rss)


@pytest.mark.slow
def test_a_200_mb_file_streams_with_flat_memory(tmp_path: Path) -> None:
    size = 200 << 20
    big = tmp_path / "src/big.img"
    big.parent.mkdir()
    with open(big, "wb") as handle:
        handle.truncate(size)  # sparse: 200 MB of zeros without the disk writes
    small = tmp_path / "small/one.txt"
    small.parent.mkdir()
    small.write_bytes(b"x")
    big_archive, small_archive = tmp_path / "big.tar.zst", tmp_path / "small.tar.zst"
    backup(big.parent, big_archive)
    backup(small.parent, small_archive)
    written, big_rss = peak_rss_kib(big_archive, tmp_path / "big-restored")
    _, small_rss = peak_rss_kib(small_archive, tmp_path / "small-restored")
    print(f"peak RSS: {big_rss} KiB extracting {size >> 20} MiB, "
          f"{small_rss} KiB extracting 1 byte")
    assert written == size
    assert (tmp_path / "big-restored" / host_path(big)).stat().st_size == size
    assert big_rss - small_rss < 32 << 10  # KiB: the file is 200 MiB
