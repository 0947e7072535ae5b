"""The disk side on its own: whatever the rules let through, no symlink is ever followed."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from trackerbackup.extract_rules import Kind, Member, Parts
from trackerbackup.extract_tree import Obstacle, Tree, open_root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "outside"
    path.mkdir()
    return path


@pytest.fixture
def tree(tmp_path: Path, outside: Path) -> Iterator[Tree]:
    target = tmp_path / "target"
    (target / "sub").mkdir(parents=True)
    (target / "link").symlink_to(outside)
    (target / "inner").symlink_to("sub")
    root, created = open_root(target, create=False)
    assert not created
    opened = Tree(root)
    yield opened
    opened.close()


def member(parts: Parts, kind: Kind = Kind.FILE) -> Member:
    return Member(name="/".join(parts), parts=parts, kind=kind, uid=0, gid=0, mode=0o600,
                  mtime_ns=1_700_000_000_000_000_000, size=4)


@pytest.mark.parametrize("parts", [("link", "x"), ("link", "deep", "x"), ("inner", "x")])
def test_the_walk_stops_at_a_symlink(tree: Tree, tmp_path: Path, outside: Path,
                                     parts: Parts) -> None:
    with pytest.raises(Obstacle) as caught:
        tree.parent(parts, create=True)
    assert caught.value.parts == parts[:1]
    assert stat.S_ISLNK(caught.value.mode)
    assert os.listdir(outside) == []
    assert os.listdir(tmp_path / "target/sub") == []


def test_a_file_written_at_a_symlink_replaces_the_link(tree: Tree, tmp_path: Path,
                                                       outside: Path) -> None:
    parent = tree.parent(("link",), create=True)
    assert parent is not None
    assert tree.write_file(parent, member(("link",)), [b"data"]) == 4
    assert (tmp_path / "target/link").read_bytes() == b"data"
    assert not (tmp_path / "target/link").is_symlink()
    assert os.listdir(outside) == []


def test_a_hard_link_is_never_made_to_a_symlink(tree: Tree, tmp_path: Path) -> None:
    (tmp_path / "target/sub/file").write_bytes(b"data")
    parent = tree.parent(("copy",), create=True)
    assert parent is not None
    assert not tree.hardlink(parent, member(("copy",), Kind.HARDLINK), ("inner",))
    with pytest.raises(Obstacle):
        tree.hardlink(parent, member(("copy",), Kind.HARDLINK), ("inner", "file"))
    assert tree.hardlink(parent, member(("copy",), Kind.HARDLINK), ("sub", "file"))
    assert (tmp_path / "target/copy").stat().st_nlink == 2
    assert sorted(os.listdir(tmp_path / "target")) == ["copy", "inner", "link", "sub"]
