"""Hostile archives: each refusal is the exact error, and nothing outside the target changes.

Every case snapshots the directory around the target (with a file outside the target that
an attack would reach) before and after the extraction.
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.kit.archives import (
    Entry,
    describe,
    directory,
    file,
    hardlink,
    snapshot,
    symlink,
    write_archive,
)
from trackerbackup.errors import EnvironmentProblem, ExitCode, UnsafeArchiveMember
from trackerbackup.extract import ExtractReport, extract


@dataclass
class Scene:
    root: Path
    target: Path
    outside: Path  # what an escaping member would reach
    archives: int = 0

    def archive(self, entries: list[Entry]) -> Path:
        self.archives += 1
        return write_archive(self.root / f"archive-{self.archives}.tar.zst", entries, "zstd")

    def extract(self, entries: list[Entry], **options: object) -> ExtractReport:
        archive = self.archive(entries)
        before = snapshot(self.root, skip=self.target)
        try:
            return extract(archive, "zstd", self.target, **options)  # type: ignore[arg-type]
        finally:
            assert snapshot(self.root, skip=self.target) == before, "changed outside"

    def refused(self, entries: list[Entry], member: str, reason: str,
                **options: object) -> None:
        with pytest.raises(UnsafeArchiveMember) as caught:
            self.extract(entries, **options)
        assert (caught.value.member, caught.value.reason) == (member, reason)
        assert caught.value.exit_code == ExitCode.BACKUP_FAILED

    def in_the_way(self, entries: list[Entry], message: str, **options: object) -> None:
        with pytest.raises(EnvironmentProblem) as caught:
            self.extract(entries, **options)
        assert caught.value.message == message
        assert caught.value.exit_code == ExitCode.ENVIRONMENT


@pytest.fixture
def scene(tmp_path: Path) -> Scene:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("must stay as it is\n")
    return Scene(tmp_path, tmp_path / "target", outside)


def test_absolute_names_land_inside_the_target(scene: Scene) -> None:
    secret = scene.outside / "secret"  # absolute: /tmp/.../outside/secret
    scene.extract([file("/etc/cron.d/trackerbackup-test", b"* * * * * root true\n"),
                   file(f"/{secret}", b"overwritten?")])
    assert (scene.target / "etc/cron.d/trackerbackup-test").is_file()
    assert not Path("/etc/cron.d/trackerbackup-test").exists()
    assert (scene.target / str(secret).lstrip("/")).read_bytes() == b"overwritten?"


@pytest.mark.parametrize("name", ["../outside/secret", "a/../../outside/secret",
                                  "/../outside/secret"])
def test_dotdot_in_a_name_is_refused(scene: Scene, name: str) -> None:
    scene.refused([directory("a"), file(name, b"planted")], name,
                  "'..' in its path would lead outside the target")


@pytest.mark.parametrize("value", ["/", "{outside}"])
def test_a_symlink_to_root_or_outside_is_refused_before_anything_is_written_through_it(
        scene: Scene, value: str) -> None:
    value = value.format(outside=scene.outside)
    scene.refused([symlink("escape", value), file("escape/planted", b"x")], "escape",
                  f"a symlink to {value!r}, outside the target")


def test_writing_through_a_symlink_the_archive_made_is_refused(scene: Scene) -> None:
    scene.refused([directory("sub"), symlink("inner", "sub"), file("inner/planted")],
                  "inner/planted",
                  "it would be written through inner, a symlink this archive created earlier")
    assert not (scene.target / "sub/planted").exists()


def test_a_symlink_to_the_target_root_is_kept_but_never_written_through(scene: Scene) -> None:
    scene.refused([symlink("root", str(scene.target)), file("root/planted")], "root/planted",
                  "it would be written through root, a symlink this archive created earlier")
    assert os.readlink(scene.target / "root") == str(scene.target)


def test_a_directory_over_a_symlink_the_archive_made_is_refused(scene: Scene) -> None:
    scene.refused([symlink("d", "."), directory("d")], "d",
                  "it would be written through d, a symlink this archive created earlier")


@pytest.mark.parametrize(("name", "value", "reason"), [
    ("up", "..", "outside the target"),
    ("a/l", "../../outside/secret", "outside the target"),
    ("a/b/l", "../../../outside", "outside the target"),
    ("a/l", "b/../../..", "'..' after a name can lead anywhere"),
    ("a/chained", "up/../x", "'..' after a name can lead anywhere"),  # a/up -> .. is fine
])
def test_a_symlink_that_can_lead_outside_is_refused(scene: Scene, name: str, value: str,
                                                    reason: str) -> None:
    entries = [directory("a"), directory("a/b"), symlink("a/up", "..")]
    if reason == "outside the target":
        reason = f"a symlink to {value!r}, outside the target"
    else:
        reason = f"a symlink to {value!r}: {reason}"
    scene.refused([*entries, symlink(name, value)], name, reason)


def test_symlinks_that_stay_inside_are_restored_as_they_are(scene: Scene) -> None:
    values = {"a/b/up2": "../..", "a/sibling": "../c/d", "a/down": "b/./x",
              "abs": f"{scene.target}/a/b"}
    scene.extract([directory("a"), directory("a/b"),
                   *(symlink(name, value) for name, value in values.items())])
    assert {name: os.readlink(scene.target / name) for name in values} == values


@pytest.mark.parametrize(("link", "reason"), [
    ("/etc/shadow", "a hard link to '/etc/shadow', which is not a file extracted earlier "
                    "in this run"),
    ("../../etc/shadow", "'..' in the path it links to ('../../etc/shadow') would lead "
                         "outside the target"),
    ("etc/shadow", "a hard link to 'etc/shadow', which is not a file extracted earlier in "
                   "this run"),
])
def test_a_hard_link_to_etc_shadow_is_refused(scene: Scene, link: str, reason: str) -> None:
    (scene.target / "etc").mkdir(parents=True)
    (scene.target / "etc/shadow").write_text("already in the target, not from this run\n")
    links = os.stat("/etc/shadow").st_nlink
    scene.refused([hardlink("shadow", link)], "shadow", reason)
    assert os.stat("/etc/shadow").st_nlink == links
    assert (scene.target / "etc/shadow").stat().st_nlink == 1


def test_a_hard_link_to_a_file_replaced_by_a_symlink_is_refused(scene: Scene) -> None:
    scene.refused([file("a", b"data"), symlink("a", "b"), hardlink("c", "a")], "c",
                  "a hard link to 'a', which is not a file extracted earlier in this run")


@pytest.mark.parametrize(("kind", "what"), [
    (tarfile.CHRTYPE, "a character device"),
    (tarfile.BLKTYPE, "a block device"),
    (tarfile.FIFOTYPE, "a FIFO"),
])
def test_devices_and_fifos_are_refused(scene: Scene, kind: bytes, what: str) -> None:
    scene.refused([directory("dev"), Entry("dev/node", kind)], "dev/node",
                  f"{what}: only files, directories and links are restored")
    assert not (scene.target / "dev/node").exists()


@pytest.mark.parametrize("mode", [0o4755, 0o2755, 0o6711], ids=oct)
def test_setuid_and_setgid_files_are_refused_unless_allowed(scene: Scene, mode: int) -> None:
    entries = [directory("usr"), Entry("usr/bin/tool", data=b"#!/bin/sh\n", mode=mode,
                                       uid=1000, gid=1000)]
    scene.refused(entries, "usr/bin/tool", f"a setuid/setgid file (mode {mode:04o})")
    assert not (scene.target / "usr/bin/tool").exists()
    scene.extract(entries, allowed_setuid=frozenset({"/usr/bin/tool"}))
    restored = describe(scene.target / "usr/bin/tool")
    assert (restored.mode, restored.uid, restored.gid) == (mode, 1000, 1000)


def test_a_setgid_directory_is_normal(scene: Scene) -> None:
    scene.extract([directory("storage", mode=0o2770)])
    assert describe(scene.target / "storage").mode == 0o2770


@pytest.mark.parametrize("entries", [
    [file("opt/torrust/planted")],
    [directory("opt")],
    [directory("opt/torrust")],
])
def test_a_symlink_already_in_the_target_is_never_followed(scene: Scene,
                                                           entries: list[Entry]) -> None:
    scene.target.mkdir()
    (scene.target / "opt").symlink_to(scene.outside)
    (scene.outside / "torrust").mkdir()
    message = (f"{scene.target}/opt is a symlink already in the target: member "
               f"{entries[0].name} is never written through it")
    scene.in_the_way(entries, message)
    scene.in_the_way(entries, message, dry_run=True)


def test_a_symlink_member_replaces_a_symlink_already_there(scene: Scene) -> None:
    scene.target.mkdir()
    (scene.target / "opt").symlink_to(scene.outside)
    report = scene.extract([symlink("opt", "elsewhere")])
    assert os.readlink(scene.target / "opt") == "elsewhere"
    assert report.replaced == 1


def test_a_target_that_is_a_symlink_is_refused(scene: Scene) -> None:
    scene.target.symlink_to(scene.outside)
    with pytest.raises(EnvironmentProblem, match="the target is a symlink"):
        scene.extract([file("planted")])


def test_a_refusal_in_a_dry_run_is_the_same_and_writes_nothing(scene: Scene) -> None:
    scene.refused([directory("sub"), symlink("inner", "sub"), file("inner/planted")],
                  "inner/planted",
                  "it would be written through inner, a symlink this archive created earlier",
                  dry_run=True)
    assert not scene.target.exists()


def test_a_huge_pax_header_is_refused_before_it_is_read(scene: Scene) -> None:
    archive = scene.root / "huge-header.tar"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("file")
        info.pax_headers = {"comment": "x" * (2 << 20)}
        tar.addfile(info)
    with pytest.raises(UnsafeArchiveMember, match="an extended header of 2,097,1"):
        extract(archive, "none", scene.target)


def test_an_owner_chown_would_misread_is_refused(scene: Scene) -> None:
    scene.refused([Entry("file", uid=2**32 - 1)], "file", "uid 4294967295 is out of range")


def test_a_file_named_like_the_target_itself_is_refused(scene: Scene) -> None:
    scene.refused([file("./")], "./", "it names the target directory itself")
