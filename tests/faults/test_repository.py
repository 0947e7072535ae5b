"""A repository with planted entries: a future-dated backup, a symlinked type directory,
an `<id>` that is a symlink, a `.partial-*` that is a file, malformed manifests, a FIFO."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.faults import kit
from tests.faults.report import Results

pytestmark = pytest.mark.testbed

PLANTED = "repository with planted entries"
PLANTED_TEXT = ("Entries planted in the type directory before a run. After `run`, `list`, "
                "`prune` and `verify --all` (each within 60 s: a FIFO must not hang them): no "
                "traceback, exit 0, no planted entry listed as verified, nothing outside "
                "`backup_dir` touched, the planted entries left alone, and every check after "
                "a fault.")
FUTURE_ID = "20991231T235959.000000Z"


def manifest(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = tomllib.loads((path / "manifest.toml").read_text())
    return data


def plant_copy(good: Path, backup_id: str, change: Callable[[dict[str, Any]], None]) -> Path:
    target = good.with_name(backup_id)
    shutil.copytree(good, target, symlinks=True)
    data = manifest(target)
    data["id"] = backup_id
    change(data)
    (target / "manifest.toml").write_text(tomli_w.dumps(data))
    return target


def old_id(number: int) -> str:
    return f"2020010{number}T000000.000000Z"


MALFORMED: dict[str, Callable[[dict[str, Any]], None]] = {
    "TOML datetimes": lambda m: m.update(started=datetime.fromisoformat(m["started"])),
    "artifacts = 5": lambda m: m.update(artifacts=5),
    "warnings = 3": lambda m: m.update(warnings=3),
    "started without a time zone": lambda m: m.update(started="2020-01-01T00:00:00"),
    'verified = "false"': lambda m: m.update(verified="false"),
}


def plant(kind: str, good: Path, outside: Path) -> list[Path]:
    """Plant one kind of entry; returns what must survive untouched."""
    type_dir = good.parent
    if kind == "future-dated manifest":
        def future(m: dict[str, Any]) -> None:
            m.update(started="2099-12-31T23:59:59+00:00", finished="2099-12-31T23:59:59+00:00")
        return [plant_copy(good, FUTURE_ID, future)]
    if kind == "malformed manifests":
        planted = [plant_copy(good, old_id(n + 1), change)
                   for n, change in enumerate(MALFORMED.values())]
        fifo = plant_copy(good, old_id(len(MALFORMED) + 1), lambda m: None)
        (fifo / "manifest.toml").unlink()
        os.mkfifo(fifo / "manifest.toml")
        return [*planted, fifo]
    if kind == ".partial-* that is a file":
        (type_dir / ".partial-20200101T000000.000000Z").write_text("not a directory")
        return []
    shutil.copytree(good, outside / good.name)
    (outside / ".partial-x").mkdir()
    (outside / ".partial-x" / "sentinel").write_text("outside")
    if kind == "<id> that is a symlink":
        (type_dir / old_id(1)).symlink_to(outside / good.name)
        return [outside / good.name, outside / ".partial-x" / "sentinel"]
    # "symlinked type dir": the type directory itself is a link to the outside copy
    moved = type_dir.with_name(type_dir.name + ".real")
    type_dir.rename(moved)
    type_dir.symlink_to(outside)
    return [outside / good.name, outside / ".partial-x" / "sentinel"]


def unplant(kind: str, type_dir: Path) -> None:
    if kind == "symlinked type dir":
        type_dir.unlink()
        type_dir.with_name(type_dir.name + ".real").rename(type_dir)
        return
    for entry in type_dir.iterdir():
        if entry.name.startswith("2020") or entry.name == FUTURE_ID \
                or entry.name.startswith(".partial-2020"):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def contents(path: Path) -> object:
    """What must not change (`verify` may add its own record beside a backup)."""
    if path.is_dir():
        return sorted(set(os.listdir(path)) - {"verification.toml"})
    return path.read_bytes()


KINDS = ["future-dated manifest", "malformed manifests", ".partial-* that is a file",
         "<id> that is a symlink", "symlinked type dir"]


@pytest.mark.parametrize("scenario", kit.SCENARIOS, ids=lambda s: s.name)
def test_planted_entries(fault_stack: Callable[[kit.TypeScenario], kit.Cli],
                         scenario: kit.TypeScenario, mode: kit.Mode, results: Results,
                         tmp_path: Path) -> None:
    cli = fault_stack(scenario)
    text = cli.stack.config_path.read_text()  # item 3's policy: the newest one only
    cli.stack.config_path.write_text(text.replace(kit.RETENTION_TOML,
                                                  "keep_last = 1\nkeep_daily = 1\n"))
    cli.ok("run", scenario.backup_type)
    type_dir = cli.stack.backup_dir / scenario.backup_type
    for kind in KINDS if mode.name == "long" else mode.variants(f"planted-{scenario.name}",
                                                                   KINDS[:4]) + KINDS[4:]:
        outside = tmp_path / kind.replace(" ", "_").replace("*", "x")
        outside.mkdir()
        with kit.trial(results, PLANTED, PLANTED_TEXT, cli, scenario, kind) as current:
            good = max(p for p in type_dir.iterdir() if p.name.startswith("20")
                       and not p.name.startswith(("2020", "2099")))
            survivors = plant(kind, good, outside)
            before = {p: contents(p) for p in survivors}
            current.checks = [check_commands(cli, scenario, kind)]
            for path, content in before.items():
                if contents(path) != content:
                    raise kit.TrialFailed(f"{kind}: {path} was changed or deleted")
            current.hit = True
            unplant(kind, type_dir)
            checks = kit.Checks(cli, scenario)
            checks.snapshot()
            checks.after_fault()
            current.checks += checks.done
    kit.assert_no_failures(results, PLANTED, scenario)


def check_commands(cli: kit.Cli, scenario: kit.TypeScenario, kind: str) -> str:
    """Every command the operator would run; returns what was checked."""
    made = []
    for args in (("run", scenario.backup_type), ("list", scenario.backup_type, "--json"),
                 ("prune", scenario.backup_type), ("run", scenario.backup_type),
                 ("verify", scenario.backup_type, "--all")):
        try:
            result = cli(*args, timeout=60)
        except subprocess.TimeoutExpired as error:
            raise kit.TrialFailed(f"{kind}: trackerbackup {' '.join(args)} hung") from error
        text = result.stdout + result.stderr
        if "Traceback" in text:
            raise kit.TrialFailed(f"{kind}: trackerbackup {' '.join(args)}: traceback\n{text}")
        expected = (0, 3) if kind == "symlinked type dir" else (0,)
        if result.returncode not in expected:
            raise kit.TrialFailed(f"{kind}: trackerbackup {' '.join(args)} exited "
                                  f"{result.returncode}:\n{text[-2000:]}")
        if args[0] == "run" and result.returncode == 0:
            made.append(result.stdout.split()[2].rstrip(":"))
    if kind == "symlinked type dir":
        return "run, list, prune, verify: refused with exit 3 and a message, no traceback"
    listed = cli.listed(scenario.backup_type)
    ids = {b["id"] for b in listed}
    wrong = [b["id"] for b in listed if b["id"].startswith("2020") and b["verified"]]
    if wrong:
        raise kit.TrialFailed(f"{kind}: planted entries listed as verified: {wrong}")
    if made and made[-1] not in ids:
        raise kit.TrialFailed(f"{kind}: the run's own backup {made[-1]} is gone: {sorted(ids)}")
    return "run, list, prune, run, verify: no traceback or hang; own backup kept"
