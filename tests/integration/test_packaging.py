"""The Debian package as an operator gets it: built, linted, its units verified.

Builds the .deb once per session with debian/build-deb.sh (a clean copy of the tree, so
the checkout stays clean), then checks what it contains, runs lintian on it, and runs
`systemd-analyze verify` and `systemd-analyze security` on its units inside a root made
of the unpacked package plus the host's own units (no systemd as PID 1 needed).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from trackerbackup import __version__
from trackerbackup.backup_types import UNIT_INSTANCES, units
from trackerbackup.config import Tracker, example_path
from trackerbackup.log import Event
from trackerbackup.schema import keys_of

ROOT = Path(__file__).parents[2]
MAX_EXPOSURE = 2.5
UNIT_DIR = "usr/lib/systemd/system"
CONFFILE = "etc/trackerbackup/trackerbackup.toml"
# Where the Python package lands in the .deb (pybuild, Debian's python3).
DIST_PACKAGES = "usr/lib/python3/dist-packages"

pytestmark = pytest.mark.slow


def need(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")


def run(*argv: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [str(a) for a in argv], capture_output=True, text=True, check=False, **kwargs
    )


@dataclass(frozen=True)
class Package:
    deb: Path
    changes: Path
    tree: Path  # the unpacked data part
    control: Path  # the unpacked control part
    listing: dict[str, tuple[str, str]]  # path -> (mode string, owner/group)


@pytest.fixture(scope="session")
def package(tmp_path_factory: pytest.TempPathFactory) -> Package:
    need("dpkg-buildpackage", "dpkg-deb")
    out = tmp_path_factory.mktemp("deb")
    built = run("sh", ROOT / "debian/build-deb.sh", out, timeout=600)
    assert built.returncode == 0, built.stderr
    deb = Path(built.stdout.strip().splitlines()[-1])
    changes = next(out.glob("trackerbackup_*.changes"))
    tree = out / "tree"
    control = out / "control"
    assert run("dpkg-deb", "-x", deb, tree).returncode == 0
    assert run("dpkg-deb", "-e", deb, control).returncode == 0
    listing: dict[str, tuple[str, str]] = {}
    for line in run("dpkg-deb", "-c", deb).stdout.splitlines():
        mode, owner, _size, _date, _time, name = line.split(maxsplit=5)
        listing[name.removeprefix("./").split(" -> ")[0].rstrip("/")] = (mode, owner)
    return Package(deb, changes, tree, control, listing)


@pytest.fixture(scope="session")
def sysroot(package: Package, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The unpacked package plus the host's units (targets the units refer to)."""
    need("systemd-analyze")
    root = tmp_path_factory.mktemp("sysroot")
    host_units = Path("/lib/systemd/system")
    shutil.copytree(host_units, root / "usr/lib/systemd/system", symlinks=True, dirs_exist_ok=True)
    shutil.copytree(package.tree, root, symlinks=True, dirs_exist_ok=True)  # ours win
    return root


def analyze(sysroot: Path, *args: str, debug: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MANPATH": str(sysroot / "usr/share/man")}
    if debug:
        env["SYSTEMD_LOG_LEVEL"] = "debug"
    return run("systemd-analyze", *args, f"--root={sysroot}", env=env, cwd="/", timeout=120)


# --- contents ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "usr/bin/trackerbackup",
        f"{DIST_PACKAGES}/trackerbackup/__init__.py",
        f"{UNIT_DIR}/trackerbackup@.service",
        f"{UNIT_DIR}/trackerbackup@.timer",
        f"{UNIT_DIR}/trackerbackup-failure@.service",
        *(f"{UNIT_DIR}/trackerbackup@{t}.timer.d/10-schedule.conf" for t in UNIT_INSTANCES),
        "usr/lib/tmpfiles.d/trackerbackup.conf",
        "usr/lib/systemd/catalog/trackerbackup.catalog",
        "usr/share/man/man8/trackerbackup.8.gz",
        "usr/share/man/man5/trackerbackup.toml.5.gz",
        "usr/share/bash-completion/completions/trackerbackup",
        "usr/share/doc/trackerbackup/copyright",
        CONFFILE,
    ],
)
def test_package_contains(package: Package, path: str) -> None:
    assert path in package.listing


def test_units_tmpfiles_and_catalog_share_the_usr_lib_prefix(package: Package) -> None:
    assert not [path for path in package.listing if path == "lib" or path.startswith("lib/")]
    for path in (UNIT_DIR, "usr/lib/tmpfiles.d", "usr/lib/systemd/catalog"):
        assert path in package.listing


def test_version_is_the_programs_without_a_debian_revision(package: Package) -> None:
    """A native package (debian/source/format) has no revision: 0.1.0, not 0.1.0-1."""
    assert (ROOT / "debian/source/format").read_text().strip() == "3.0 (native)"
    assert package.deb.name == f"trackerbackup_{__version__}_all.deb"
    version = run("dpkg-deb", "-f", package.deb, "Version").stdout.strip()
    assert version == __version__


def build_log(package: Package) -> str:
    return (package.changes.parent / "build.log").read_text()


def test_source_package_builds_without_warnings(package: Package) -> None:
    assert package.changes.with_name(f"trackerbackup_{__version__}.dsc").exists()
    assert "dpkg-source -b ." in build_log(package)
    assert re.findall(r"^dpkg-source: warning: .*$", build_log(package), re.M) == []


def test_the_build_runs_the_unit_tests(package: Package) -> None:
    """dh_auto_test: tests/unit only (no Docker), and they passed."""
    log = build_log(package)
    assert re.search(r"python3\.\d+ -m pytest \S+/tests/unit --import-mode=append ", log)
    # pytest adds "(h:mm:ss)" to a run over a minute (a loaded build machine).
    assert re.search(r"^=+ \d+ passed(, \d+ \w+)* in [\d.]+s( \(\d+:\d\d:\d\d\))? =+$", log,
                     re.M)
    assert not re.search(r"^=+ .*\d+ failed", log, re.M)


def test_the_example_a_missing_config_points_to_is_shipped(package: Package) -> None:
    # config.load's hint names example_path(): the package data file, here in dist-packages.
    shipped = f"{DIST_PACKAGES}/trackerbackup/data/trackerbackup.toml"
    assert example_path().parts[-3:] == ("trackerbackup", "data", "trackerbackup.toml")
    assert shipped in package.listing
    assert (package.tree / shipped).read_text() == (package.tree / CONFFILE).read_text()


def test_description_promises_only_what_exists(package: Package) -> None:
    control = run("dpkg-deb", "-f", package.deb, "Description", "Depends", "Suggests").stdout
    [driver] = [key for key in keys_of(Tracker) if key.name == "driver"]
    assert ("mysql" in control.lower()) == ("mysql" in driver.setting.choices)
    assert "storage tree for disaster recovery" not in control


def test_config_is_a_root_only_conffile(package: Package) -> None:
    conffiles = (package.control / "conffiles").read_text().split()
    assert f"/{CONFFILE}" in conffiles
    assert package.listing[CONFFILE] == ("-rw-------", "root/root")


def code_lines(script: Path) -> list[str]:
    return [
        line
        for line in script.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_backups_are_not_shipped_and_never_purged(package: Package) -> None:
    assert not any(p.startswith("var/backups") for p in package.listing)
    assert not [line for line in code_lines(package.control / "postrm") if "/var/backups" in line]
    tmpfiles = (package.tree / "usr/lib/tmpfiles.d/trackerbackup.conf").read_text()
    # "d" without an age: systemd-tmpfiles never cleans or removes the backups.
    assert re.search(r"^d /var/backups/trackerbackup 0700 root root -$", tmpfiles, re.M)
    assert re.search(r"^d /run/trackerbackup 0700 root root -$", tmpfiles, re.M)


def test_removal_stops_every_timer_and_service(package: Package) -> None:
    """prerm remove: each backup type's and the verify job's units, from the registry of
    types (debian/rules)."""
    prerm = (package.control / "prerm").read_text()
    [stopped] = re.findall(r"^\s*deb-systemd-invoke stop (.+?) >/dev/null", prerm, re.M)
    assert stopped.split() == ([units(name)[0] for name in UNIT_INSTANCES]
                               + [units(name)[1] for name in UNIT_INSTANCES])
    assert "#BACKUP_UNITS#" not in prerm


def test_nothing_is_enabled_or_started_on_install(package: Package) -> None:
    for script in ("preinst", "postinst"):
        if not (package.control / script).exists():
            continue
        for line in code_lines(package.control / script):
            assert not re.search(r"\b(enable|start|restart|--now)\b", line), (script, line)


def test_bash_completion_is_valid_bash(package: Package) -> None:
    need("bash")
    script = package.tree / "usr/share/bash-completion/completions/trackerbackup"
    assert run("bash", "-n", script).returncode == 0


def test_man_pages_render_without_warnings(package: Package) -> None:
    need("man")
    for page in ("man8/trackerbackup.8.gz", "man5/trackerbackup.toml.5.gz"):
        rendered = run(
            "man",
            "--warnings",
            "-l",
            package.tree / "usr/share/man" / page,
            env={**os.environ, "MANWIDTH": "80", "LC_ALL": "C.UTF-8"},
        )
        assert rendered.returncode == 0
        assert rendered.stderr == "", rendered.stderr


# --- lintian -------------------------------------------------------------------------


def test_lintian_reports_no_errors_or_warnings(package: Package) -> None:
    need("lintian")
    result = run(
        "lintian", "--fail-on", "error,warning", "--pedantic", package.changes, timeout=300
    )
    tags = [line for line in result.stdout.splitlines() if re.match(r"^[EW]: ", line)]
    assert tags == []
    assert result.returncode == 0, result.stdout + result.stderr


# --- systemd units -------------------------------------------------------------------


@pytest.mark.parametrize("backup_type", UNIT_INSTANCES)
def test_units_verify_clean(sysroot: Path, backup_type: str) -> None:
    # Also checks that ExecStart= exists in the package and Documentation= man pages.
    result = analyze(
        sysroot,
        "verify",
        f"trackerbackup@{backup_type}.service",
        f"trackerbackup@{backup_type}.timer",
        f"trackerbackup-failure@{backup_type}.service",
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


@pytest.mark.parametrize(
    "unit", ["trackerbackup@database.service", "trackerbackup-failure@database.service"]
)
def test_security_exposure_is_low(sysroot: Path, unit: str) -> None:
    result = analyze(sysroot, "security", "--offline=yes", "--no-pager", unit)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match[1]) <= MAX_EXPOSURE, result.stdout


def test_failure_unit_writes_nowhere(package: Package) -> None:
    """notify-failure logs, pings and runs the hook: it needs no ReadWritePaths=."""
    unit = (package.tree / UNIT_DIR / "trackerbackup-failure@.service").read_text()
    assert re.search(r"^ProtectSystem=strict$", unit, re.M)
    assert not re.search(r"^ReadWritePaths=", unit, re.M)


def test_services_have_no_install_section_and_timer_has_one(package: Package) -> None:
    units = package.tree / UNIT_DIR
    for service in ("trackerbackup@.service", "trackerbackup-failure@.service"):
        assert not re.search(r"^\[Install\]", (units / service).read_text(), re.M)
    timer = (units / "trackerbackup@.timer").read_text()
    assert re.search(r"^\[Install\]\nWantedBy=timers\.target$", timer, re.M)
    assert re.search(r"^Persistent=true$", timer, re.M)


def effective_calendar(sysroot: Path, timer: str) -> list[str]:
    """OnCalendar= values after all drop-ins, from the unit dump of a debug verify."""
    result = analyze(sysroot, "verify", "--man=no", timer, debug=True)
    assert result.returncode == 0, result.stderr[-2000:]
    # The unit dump goes to standard output, the debug log to standard error.
    return re.findall(r"^\s*OnCalendar: (.+)$", result.stdout, re.M)


@pytest.mark.parametrize(
    ("backup_type", "calendar"),
    [
        ("database", "*-*-* 03:00:00"),
        ("selective", "*-*-* 03:30:00"),
        ("storage", "Sun *-*-* 04:00:00"),
        ("verify", "Sat *-*-* 05:00:00"),
        ("critical", "*-*-* *:00/15:00"),
        ("other", "*-*-* 00:00:00"),  # no drop-in: the template's daily default
    ],
)
def test_default_schedules(sysroot: Path, backup_type: str, calendar: str) -> None:
    assert effective_calendar(sysroot, f"trackerbackup@{backup_type}.timer") == [calendar]


@pytest.fixture
def overridden(sysroot: Path) -> Iterator[Path]:
    """What `systemctl edit trackerbackup@database.timer` writes."""
    dropins = sysroot / "etc/systemd/system/trackerbackup@database.timer.d"
    dropins.mkdir(parents=True)
    (dropins / "override.conf").write_text("[Timer]\nOnCalendar=\nOnCalendar=hourly\n")
    try:
        yield sysroot
    finally:
        shutil.rmtree(dropins)


def test_systemctl_edit_override_replaces_the_default_schedule(overridden: Path) -> None:
    assert effective_calendar(overridden, "trackerbackup@database.timer") == ["*-*-* *:00:00"]


# --- journal catalog -----------------------------------------------------------------


def catalog_entries(text: str) -> dict[str, str]:
    entries: dict[str, str] = {}
    for block in re.split(r"^-- ", text, flags=re.M)[1:]:
        header, _, body = block.partition("\n")
        entries[header.strip()] = body
    return entries


def test_every_event_has_a_catalog_entry(package: Package) -> None:
    text = (package.tree / "usr/lib/systemd/catalog/trackerbackup.catalog").read_text()
    entries = catalog_entries(text)
    assert set(entries) == {event.value for event in Event}
    for message_id, body in entries.items():
        for field in (
            "Subject: ",
            "Defined-By: trackerbackup",
            "Support: ",
            "Documentation: man:trackerbackup",
        ):
            assert re.search(rf"^{re.escape(field)}", body, re.M), (message_id, field)


def test_catalog_compiles_with_journalctl(package: Package, tmp_path: Path) -> None:
    need("journalctl")
    catalog_dir = tmp_path / "usr/lib/systemd/catalog"
    catalog_dir.mkdir(parents=True)
    shutil.copy(package.tree / "usr/lib/systemd/catalog/trackerbackup.catalog", catalog_dir)
    assert run("journalctl", f"--root={tmp_path}", "--update-catalog").returncode == 0
    listed = run("journalctl", f"--root={tmp_path}", "--list-catalog").stdout
    ids = {line.split()[0] for line in listed.splitlines() if line.strip()}
    assert {event.value for event in Event} <= ids
