"""`python3 -m tests.testbed up|down|status`: the demo's stack, left running between calls."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.testbed import TestbedError
from tests.testbed.engine import ensure_engine, stop_engine_from_pidfile
from tests.testbed.images import ensure_images
from tests.testbed.prefix import PrefixMismatch, assert_prefix_consistent
from tests.testbed.stack import Stack, down_project

STATE = "testbed/stack.json"


def cmd_up(args: argparse.Namespace) -> int:
    root = Path(args.root).resolve()
    ensure_engine().close()  # the demo stack keeps it in use; `down` may stop it
    images = ensure_images()
    _down(root, args.project, stop_engine=False)
    stack = Stack(args.flavour, root=root, project=args.project, name_prefix=args.name_prefix,
                  rows=args.rows, journal_mode=args.journal_mode,
                  writer_interval_ms=args.interval_ms, images=images)
    try:
        stack.up()
    except BaseException:
        stack.down()
        raise
    (root / STATE).write_text(json.dumps({"project": stack.project, "root": str(root),
                                          "config": str(stack.config_path)}) + "\n")
    print(stack.describe())
    return 0


def _down(root: Path, project: str, *, stop_engine: bool) -> None:
    removed = down_project(project)
    if removed:
        print(f"removed {len(removed)} container(s) of project {project}")
    if root.exists():
        shutil.rmtree(root)
        print(f"removed {root}")
    if stop_engine:
        stop_engine_from_pidfile()


def cmd_down(args: argparse.Namespace) -> int:
    _down(Path(args.root).resolve(), args.project, stop_engine=True)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status_file = Path(args.root) / "opt/torrust/storage/tracker/log/testbed-status.json"
    if not status_file.exists():
        print(f"no writer status at {status_file}: is the stack up?", file=sys.stderr)
        return 1
    print(status_file.read_text(), end="")
    return 0


def cmd_check_prefix(args: argparse.Namespace) -> int:
    """Is a database snapshot (.db, or .db.zst) the database after an exact op prefix?"""
    root = Path(args.root)
    snapshot = Path(args.snapshot)
    with tempfile.TemporaryDirectory(prefix="tb-check-") as tmp:
        if snapshot.suffix == ".zst":
            plain = Path(tmp) / snapshot.stem
            with plain.open("wb") as out:
                proc = subprocess.run(["zstd", "-d", "-c", str(snapshot)], stdout=out,
                                      stderr=subprocess.PIPE, check=False)
            if proc.returncode != 0:
                raise TestbedError(f"zstd -d {snapshot} failed: {proc.stderr.decode()[-500:]}")
            snapshot = plain
        try:
            oplog = root / "opt/torrust/storage/tracker/log/testbed-oplog.tsv"
            seq = assert_prefix_consistent(snapshot, root / "testbed/initial.db", oplog)
        except PrefixMismatch as exc:
            print(f"NOT CONSISTENT: {exc}", file=sys.stderr)
            return 1
    print(f"consistent: {args.snapshot} == initial database + writer ops 1..{seq}, exactly")
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python3 -m tests.testbed")
    p.add_argument("--root", default="/tmp/trackerbackup-demo")
    p.add_argument("--project", default="torrust")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="build images if needed, start the stack, leave it running")
    up.add_argument("--flavour", choices=("sqlite", "mysql"), default="sqlite")
    up.add_argument("--name-prefix", default="", help='container name prefix ("" = tracker, mysql)')
    up.add_argument("--rows", type=int, default=20000)
    up.add_argument("--journal-mode", default="delete")
    up.add_argument("--interval-ms", type=float, default=5.0)
    sub.add_parser("down", help="remove the containers, network and root; stop our dockerd")
    sub.add_parser("status", help="print the writer's status")
    check = sub.add_parser("check-prefix", help="check an SQLite snapshot (.db or .db.zst) "
                           "against the writer's op log")
    check.add_argument("snapshot")
    args = p.parse_args(argv)
    handlers = {"up": cmd_up, "down": cmd_down, "status": cmd_status,
                "check-prefix": cmd_check_prefix}
    try:
        return handlers[args.cmd](args)
    except TestbedError as exc:
        print(f"test bed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
