"""Faults of the run's environment: the backup file system filling, the tracker container
stopped, paused or restarted, the docker CLI losing its engine, the database file replaced
mid-run or corrupt before it."""

from __future__ import annotations

import errno
import os
import re
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import pytest

from tests.faults import kit
from tests.faults.report import Results
from tests.kit.filesystems import tmpfs
from tests.testbed.engine import container_state, docker

pytestmark = pytest.mark.testbed

FAILED_CLEANLY = (0, 1, 3)  # success if the fault came too late; else failed or environment


def start_and_wait(cli: kit.Cli, scenario: kit.TypeScenario, log: Path,
                   milestone: Callable[[], bool], extra_delay: float,
                   config: Path | None = None) -> tuple[subprocess.Popen[bytes], bool]:
    """A run, and whether it reached `milestone` (+ the delay) while still going."""
    proc = cli.start("run", scenario.backup_type, log=log, config=config)
    reached = kit.wait_for(milestone, proc)
    time.sleep(extra_delay)
    return proc, reached and proc.poll() is None


def finish(cli: kit.Cli, proc: subprocess.Popen[bytes], log: Path,
           args: str = "run") -> subprocess.CompletedProcess[str]:
    proc.wait(timeout=120)
    text = log.read_text(errors="replace")
    cli.seen(text, f"trackerbackup {args} under a fault")
    return subprocess.CompletedProcess([args], proc.returncode, text, "")


def logged(log: Path, text: str) -> Callable[[], bool]:
    return lambda: log.exists() and text in log.read_text(errors="replace")


# -- the backup file system fills ---------------------------------------------------------

FILL = "backup file system full mid-run"
FILL_TEXT = ("`backup_dir` is a 64 MiB tmpfs, filled before the run to leave just what the "
             "run's free-space check asks for (its dry run's estimate) + 64 KiB; once the "
             "run's `.partial-*` directory appears (+ a random delay), another process fills "
             "the rest to the last byte. The run must fail with exit 3 and a message (or "
             "have committed first); then the ballast is removed. *hit*: the run failed.")


def estimated_bytes(cli: kit.Cli, backup_type: str) -> int:
    found = re.search(r"about ([\d,]+) bytes", cli.ok("run", backup_type, "--dry-run"))
    assert found, "the dry run names no estimate"
    return int(found.group(1).replace(",", ""))


def leave_free(directory: Path, free: int) -> None:
    ballast = shutil.disk_usage(directory).free - free
    if ballast > 0:
        fd = os.open(directory / "ballast-before", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.posix_fallocate(fd, 0, ballast)
        finally:
            os.close(fd)


def fill(directory: Path) -> None:
    with open(directory / "ballast", "wb") as out:
        chunk = b"\0" * (1 << 20)
        try:
            while True:
                out.write(chunk)
                out.flush()
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
        # the last bytes, smaller than a chunk
        for size in (4096, 1):
            with suppress(OSError), open(directory / f"ballast-{size}", "wb",
                                         buffering=0) as tail:
                while True:
                    tail.write(b"\0" * size)


@pytest.mark.parametrize("scenario", kit.SCENARIOS, ids=lambda s: s.name)
def test_backup_file_system_fills_mid_run(fault_stack: Callable[[kit.TypeScenario], kit.Cli],
                                          scenario: kit.TypeScenario, mode: kit.Mode,
                                          results: Results, tmp_path: Path) -> None:
    cli = fault_stack(scenario)
    rng = kit.rng_for(f"fill-{scenario.name}")
    with tmpfs(cli.stack.backup_dir, "size=64m"):
        duration = kit.measure_run(cli, scenario.backup_type, runs=1)
        type_dir = cli.stack.backup_dir / scenario.backup_type
        for number in range(1 if mode.name == "short" else mode.trials // 5):
            log = tmp_path / f"fill-{number}.log"
            with kit.trial(results, FILL, FILL_TEXT, cli, scenario) as current:
                checks = kit.Checks(cli, scenario)
                checks.snapshot()
                leave_free(cli.stack.backup_dir,
                           estimated_bytes(cli, scenario.backup_type) + 64 * 1024)
                proc, _ = start_and_wait(
                    cli, scenario, log, lambda: any(type_dir.glob(".partial-*")),
                    rng.uniform(0, duration / 10))
                fill(cli.stack.backup_dir)
                result = finish(cli, proc, log)
                current.hit = result.returncode != 0
                checks.clean_failure(result, (0, 3))
                for ballast in cli.stack.backup_dir.glob("ballast*"):
                    ballast.unlink()
                checks.after_fault()
                current.checks = checks.done
    kit.assert_no_failures(results, FILL, scenario)


# -- the tracker container changes state under the run ------------------------------------

CONTAINER = "tracker container stopped, paused or restarted mid-run"
CONTAINER_TEXT = ("Once the run logs that it started (+ a random delay over a normal run), "
                  "`docker stop`, `docker pause` or `docker restart` of the tracker (with "
                  "MySQL: of the MySQL server's container, which the dump reads). The "
                  "run must succeed or fail cleanly (exit 1 or 3, no traceback); the suite "
                  "then undoes its own action. *hit*: the action began while the run was "
                  "going.")


@pytest.mark.parametrize("scenario", kit.SCENARIOS, ids=lambda s: s.name)
def test_tracker_container_changes_mid_run(fault_stack: Callable[[kit.TypeScenario], kit.Cli],
                                           scenario: kit.TypeScenario, mode: kit.Mode,
                                           results: Results, tmp_path: Path) -> None:
    cli = fault_stack(scenario)
    rng = kit.rng_for(f"container-{scenario.name}")
    duration = kit.measure_run(cli, scenario.backup_type, runs=1)
    # With MySQL the dump reads from the server's container: that is the one to disturb.
    name = cli.stack.mysql_container or cli.stack.tracker_container
    actions = mode.variants(f"container-{scenario.name}", ["stop", "pause", "restart"])
    for number, action in enumerate(actions):
        log = tmp_path / f"{action}-{number}.log"
        with kit.trial(results, CONTAINER, CONTAINER_TEXT, cli, scenario, action) as current:
            checks = kit.Checks(cli, scenario)
            checks.snapshot()
            proc, current.hit = start_and_wait(cli, scenario, log,
                                               logged(log, "backup started"),
                                               rng.uniform(0, duration / 2))
            acted = run_docker(action, name)
            current.hit = current.hit and acted
            result = finish(cli, proc, log)
            checks.clean_failure(result, FAILED_CLEANLY)
            if action == "pause" and container_state(name) == "paused":
                docker("unpause", name)
            kit.ensure_tracker_running(cli.stack)
            checks.after_fault()
            current.checks = checks.done
    kit.assert_no_failures(results, CONTAINER, scenario)


def run_docker(action: str, name: str) -> bool:
    """The suite's action on the tracker; False when the run's own freeze had the container
    stopped or paused already (docker refuses to pause a stopped or a paused container: not
    a fault of the run, and the run thaws it itself)."""
    args = ["-t", "2"] if action in ("stop", "restart") else []
    proc = subprocess.run(["/usr/bin/docker", action, *args, name], capture_output=True,
                          text=True, check=False, timeout=120)
    already_frozen = ("is not running" in proc.stderr or "is already paused" in proc.stderr)
    if proc.returncode != 0 and not already_frozen:
        raise kit.TrialFailed(f"docker {action} {name}: {proc.stderr.strip()}")
    return proc.returncode == 0


# -- the docker CLI loses its engine ------------------------------------------------------

SOCKET = "docker engine gone"
SOCKET_TEXT = ("`general.docker` points at a wrapper that passes the first *k* calls to "
               "docker and then fails like a CLI whose socket is gone (\"Cannot connect to "
               "the Docker daemon\"), for each *k* from 0 to the calls of a normal run "
               "(short mode: a sample). The run must exit 3 with a message (or succeed if it "
               "needed no more calls); `recover` with the engine back must leave the tracker "
               "running. *hit*: the run failed.")
WRAPPER = """#!/bin/bash
count_file={count}
n=$(( $(cat "$count_file" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$count_file"
if [ "$n" -gt {limit} ]; then
    echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock." \
"Is the docker daemon running?" >&2
    exit 1
fi
exec /usr/bin/docker "$@"
"""


def docker_wrapper(cli: kit.Cli, directory: Path, limit: int) -> tuple[Path, Path]:
    """A config using a docker CLI that fails after `limit` calls; and its call counter."""
    directory.mkdir(mode=0o700, exist_ok=True)
    count = directory / "calls"
    count.unlink(missing_ok=True)
    wrapper = directory / "docker"
    wrapper.write_text(WRAPPER.format(count=count, limit=limit))
    wrapper.chmod(0o700)
    config = directory / "trackerbackup.toml"
    text = cli.stack.config_path.read_text().replace(
        'docker = "/usr/bin/docker"', f'docker = "{wrapper}"')
    config.write_text(text)
    config.chmod(0o600)
    return config, count


@pytest.mark.parametrize("scenario", kit.SCENARIOS, ids=lambda s: s.name)
def test_docker_engine_gone(fault_stack: Callable[[kit.TypeScenario], kit.Cli],
                            scenario: kit.TypeScenario, mode: kit.Mode, results: Results,
                            tmp_path: Path) -> None:
    cli = fault_stack(scenario)
    config, count = docker_wrapper(cli, tmp_path / "wrapper", 10_000)
    cli.ok("run", scenario.backup_type, config=config)
    calls = int(count.read_text()) if count.exists() else 0
    limits = list(range(calls + 1))
    if mode.name == "short":  # the long mode: each k once
        limits = mode.variants(f"docker-{scenario.name}", limits)
    results.note(SOCKET, SOCKET_TEXT, scenario.name, f"a normal run makes {calls} docker calls")
    for limit in limits:
        with kit.trial(results, SOCKET, SOCKET_TEXT, cli, scenario, f"k={limit}") as current:
            checks = kit.Checks(cli, scenario)
            checks.snapshot()
            config, count = docker_wrapper(cli, tmp_path / "wrapper", limit)
            result = cli("run", scenario.backup_type, config=config)
            current.hit = result.returncode != 0
            checks.clean_failure(result, (0, 3) if limit < calls else (0,))
            if result.returncode == 3 and "Docker engine is not reachable" not in result.stderr:
                raise kit.TrialFailed(f"exit 3 without naming the engine:\n{result.stderr}")
            checks.after_fault()
            current.checks = checks.done
    kit.assert_no_failures(results, SOCKET, scenario)


# -- the database file --------------------------------------------------------------------

DB_SCENARIOS = [s for s in kit.SCENARIOS
                if s.backup_type == "database" and s.flavour == "sqlite"][:1]
REPLACED = "database file replaced mid-run"
REPLACED_TEXT = ("Once the run logs that it started (+ a random delay), the tracker's "
                 "database file is replaced (rename over it) by a consistent copy of itself "
                 "or by garbage of the same size. The run must succeed with a backup that "
                 "verifies, or fail cleanly; the tracker is then restarted on the file.")


def replacement(db: Path, kind: str) -> Path:
    new = db.with_name(".faults-replacement.db")
    if kind == "copy":
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as src, \
                sqlite3.connect(new) as dest:
            src.backup(dest)
    else:
        new.write_bytes(os.urandom(db.stat().st_size))
    info = db.stat()
    os.chown(new, info.st_uid, info.st_gid)
    new.chmod(info.st_mode & 0o7777)
    return new


@pytest.mark.parametrize("scenario", DB_SCENARIOS, ids=lambda s: s.name)
def test_database_file_replaced_mid_run(fault_stack: Callable[[kit.TypeScenario], kit.Cli],
                                        scenario: kit.TypeScenario, mode: kit.Mode,
                                        results: Results, tmp_path: Path) -> None:
    cli = fault_stack(scenario)
    db = cli.stack.db_path
    good = tmp_path / "good.db"
    duration = kit.measure_run(cli, scenario.backup_type, runs=1)
    rng = kit.rng_for("replace")
    for number, kind in enumerate(mode.variants("replace", ["copy", "garbage"])):
        log = tmp_path / f"replace-{number}.log"
        with kit.trial(results, REPLACED, REPLACED_TEXT, cli, scenario, kind) as current:
            checks = kit.Checks(cli, scenario)
            checks.snapshot()
            new = replacement(db, kind)
            proc, current.hit = start_and_wait(cli, scenario, log, logged(log, "backup started"),
                                               rng.uniform(0, duration / 2))
            if kind == "garbage":
                shutil.copy2(db, good)  # only to put back afterwards
            os.replace(new, db)
            result = finish(cli, proc, log)
            checks.clean_failure(result, FAILED_CLEANLY)
            if kind == "garbage":
                os.replace(replacement(good, "copy"), db)
            docker("restart", "-t", "5", cli.stack.tracker_container)
            checks.after_fault()
            current.checks = checks.done
    kit.assert_no_failures(results, REPLACED, scenario)


CORRUPT = "corrupt source database"
CORRUPT_TEXT = ("With the tracker stopped, its database is damaged: a b-tree page's type "
                "byte, the file header, the file cut to half, or emptied. The run must fail "
                "(exit 1 or 3, a message) and list no new backup; with the file repaired and "
                "the tracker started, every check after a fault.")


def corrupt(db: Path, how: str) -> None:
    page_size = int.from_bytes(db.read_bytes()[16:18], "big") or 65536
    with open(db, "r+b") as out:
        if how == "btree page":
            out.seek(page_size)  # page 2: a b-tree page of the schema
            out.write(b"\x7f")
        elif how == "header":
            out.write(os.urandom(100))
        elif how == "half":
            out.truncate(db.stat().st_size // 2)
        else:
            out.truncate(0)


@pytest.mark.parametrize("scenario", DB_SCENARIOS, ids=lambda s: s.name)
def test_corrupt_source_database(fault_stack: Callable[[kit.TypeScenario], kit.Cli],
                                 scenario: kit.TypeScenario, mode: kit.Mode, results: Results,
                                 tmp_path: Path) -> None:
    cli = fault_stack(scenario)
    cli.ok("run", scenario.backup_type)
    hows = ["btree page", "header", "half", "empty"]
    for how in hows if mode.name == "long" else mode.variants("corrupt", hows):
        corrupt_trial(cli, scenario, how, results, tmp_path)
    kit.assert_no_failures(results, CORRUPT, scenario)


def corrupt_trial(cli: kit.Cli, scenario: kit.TypeScenario, how: str, results: Results,
                  tmp_path: Path) -> None:
    with kit.trial(results, CORRUPT, CORRUPT_TEXT, cli, scenario, how) as current:
        checks = kit.Checks(cli, scenario)
        checks.snapshot()
        cli.stack.stop_writer()
        good = tmp_path / "good.db"
        shutil.copy2(cli.stack.db_path, good)
        corrupt(cli.stack.db_path, how)
        result = cli("run", scenario.backup_type)
        current.hit = result.returncode != 0
        checks.clean_failure(result, (1, 3))
        checks.nothing_partial_listed_and_nothing_lost()
        if len(cli.listed(scenario.backup_type)) != len(checks.before):
            raise kit.TrialFailed(f"a backup of a corrupt database ({how}) was listed")
        with open(cli.stack.db_path, "r+b") as out:
            out.write(good.read_bytes())
            out.truncate()
        cli.stack.start_writer()
        checks.after_fault()
        current.checks = ["no new backup listed", *checks.done]
