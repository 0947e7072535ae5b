"""Developer sessions: `nox -s tests lint typecheck deb docs`.

Sessions run on Debian's /usr/bin/python3 with system site packages, because the
run-time dependencies are Debian packages (python3-systemd, python3-zstandard,
python3-tomli-w, python3-pymysql), exactly as on an operator's host.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "/usr/bin/python3"
VENV_PARAMS = ["--system-site-packages"]


@nox.session(python=PYTHON, venv_params=VENV_PARAMS)
def tests(session: nox.Session) -> None:
    """The whole suite: unit, integration, and end-to-end on the Docker test bed."""
    session.install("pytest>=7")
    session.run("python", "-m", "pytest", *(session.posargs or ["tests"]))


@nox.session(python=PYTHON, venv_params=VENV_PARAMS)
def unit(session: nox.Session) -> None:
    """Fast tests only: no Docker, no package build."""
    session.install("pytest>=7")
    session.run("python", "-m", "pytest", "tests/unit", "tests/integration",
                "-m", "not testbed and not vm", *session.posargs)


@nox.session(python=PYTHON, venv_params=VENV_PARAMS)
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.8")
    session.run("ruff", "check", "trackerbackup", "tests", "bench", "noxfile.py")


@nox.session(python=PYTHON, venv_params=VENV_PARAMS)
def typecheck(session: nox.Session) -> None:
    # A version floor, so pip installs it into the venv rather than settling for an older
    # mypy that Debian may have put in the system site packages.
    session.install("mypy>=1.13", "pytest>=7")
    session.run("python", "-m", "mypy")


@nox.session(python=False)
def deb(session: nox.Session) -> None:
    """Build the Debian package into dist/ (dpkg-buildpackage in a clean copy)."""
    session.run("bash", "debian/build-deb.sh", "dist", external=True)


@nox.session(python=False)
def docs(session: nox.Session) -> None:
    """Regenerate the example config and the key list of trackerbackup.toml(5) from the
    declarations in trackerbackup/config.py (tests/unit/test_config_docs.py checks them)."""
    for kind, path in (("example", "trackerbackup/data/trackerbackup.toml"),
                       ("man", "docs/man/trackerbackup.toml.5")):
        session.run(PYTHON, "-m", "trackerbackup.config_docs", kind, path, external=True)


@nox.session(python=PYTHON, venv_params=VENV_PARAMS)
def faults(session: nox.Session) -> None:
    """The fault-injection suite on the Docker test bed: `nox -s faults` is the short mode
    (CI; also part of `nox -s tests`), `nox -s faults -- long` the long one, which writes
    docs/reliability.md. Other arguments go to pytest."""
    session.install("pytest>=7")
    args = list(session.posargs)
    mode = "long" if "long" in args else "short"
    args = [a for a in args if a not in ("long", "short")]
    session.run("python", "-m", "pytest", "tests/faults", *args,
                env={"TRACKERBACKUP_FAULTS": mode})
