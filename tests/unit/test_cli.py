"""A backup type that cannot run: `run` refuses it, `check` fails while it is enabled.

Every type has a source in this version, so the tests take one away (`unavailable`)."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from trackerbackup import cli, log
from trackerbackup.errors import ExitCode
from trackerbackup.sources import registry

Main = Callable[..., int]


@pytest.fixture
def main(tmp_path: Path) -> Iterator[Main]:
    """`cli.main` with a config in tmp_path (+ `extra`); the logger and the SIGTERM
    handler it installs are put back afterwards."""
    logger = log.get_logger()
    saved = (list(logger.handlers), logger.propagate, logger.level)
    sigterm = signal.getsignal(signal.SIGTERM)
    config = tmp_path / "trackerbackup.toml"

    def run(*argv: str, extra: str = "") -> int:
        config.write_text(f'[general]\nbackup_dir = "{tmp_path}/b"\nrun_dir = "{tmp_path}/r"\n'
                          + extra)
        return cli.main(["--config", str(config), "--log-target", "console", *argv])

    yield run
    logger.handlers[:], logger.propagate, logger.level = saved
    signal.signal(signal.SIGTERM, sigterm)


@pytest.fixture
def unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The storage type as a version without its source has it."""
    monkeypatch.delitem(registry.SOURCES, "storage")


@pytest.mark.usefixtures("unavailable")
def test_check_fails_with_the_key_to_change_when_an_unavailable_type_is_enabled(
    main: Main, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main("check", "storage", extra="[storage]\nenabled = true\n") == ExitCode.USAGE
    out = capsys.readouterr().out
    assert ("storage (enabled): PROBLEM: the storage backup type is not available in this "
            "version\n  hint: set [storage] enabled = false in the configuration") in out


@pytest.mark.usefixtures("unavailable")
def test_check_accepts_an_unavailable_type_that_is_disabled(
    main: Main, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main("check", "storage", extra="[storage]\nenabled = false\n") == ExitCode.OK
    assert ("storage (disabled): the storage backup type is not available in this version\n"
            in capsys.readouterr().out)


@pytest.mark.usefixtures("unavailable")
@pytest.mark.parametrize("enabled", ["true", "false"])
def test_run_refuses_an_unavailable_type_enabled_or_not(
    main: Main, capsys: pytest.CaptureFixture[str], enabled: str
) -> None:
    assert main("run", "storage", extra=f"[storage]\nenabled = {enabled}\n") == ExitCode.USAGE
    assert "the storage backup type is not available in this version" in (
        capsys.readouterr().err)


def test_check_fails_when_the_enabled_storage_type_has_no_tree_to_archive(
    main: Main, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    extra = f'compose_dir = "{tmp_path}/nothing-here"\n'
    assert main("check", "storage", extra=extra) == ExitCode.ENVIRONMENT
    out = capsys.readouterr().out
    assert f"storage (enabled): PROBLEM: archive storage: the storage tree does not exist " \
           f"[{tmp_path}/nothing-here/storage]" in out
    assert "general.compose_dir" in out
