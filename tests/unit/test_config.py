"""Every class of configuration mistake gets an error naming the file, key and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from trackerbackup import config
from trackerbackup.errors import ConfigError, ExitCode

EXAMPLE = Path(__file__).parents[2] / "trackerbackup" / "data" / "trackerbackup.toml"


def load_text(tmp_path: Path, text: str) -> config.Config:
    path = tmp_path / "trackerbackup.toml"
    path.write_text(text)
    return config.load(path)


def problems_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text)
    assert caught.value.exit_code == ExitCode.USAGE
    assert str(tmp_path / "trackerbackup.toml") in str(caught.value)
    return caught.value.problems


def test_empty_file_gives_deployer_defaults(tmp_path: Path) -> None:
    conf = load_text(tmp_path, "")
    assert conf.general.compose_dir == Path("/opt/torrust")
    assert conf.general.storage_dir == Path("/opt/torrust/storage")
    assert conf.general.backup_dir == Path("/var/backups/trackerbackup")
    assert conf.tracker.service == "tracker"
    assert conf.sqlite.path_in_container == "/var/lib/torrust/tracker/database/tracker.db"
    assert conf.type("selective").paths == config.SELECTIVE_DEFAULT_PATHS
    assert "storage/caddy/data" in conf.type("selective").paths
    assert ".env" in conf.type("selective").paths
    assert conf.type("database").retention.keep_daily == 7


def test_shipped_example_is_valid_and_equals_the_defaults(tmp_path: Path) -> None:
    example = config.load(EXAMPLE)
    defaults = load_text(tmp_path, "")
    assert example.general == defaults.general
    assert example.sqlite == defaults.sqlite
    assert example.types == defaults.types


def test_example_mentions_every_key() -> None:
    text = EXAMPLE.read_text()
    lines = config.key_lines(text)
    for section, keys in config.SCHEMA.items():
        for key in keys:
            assert f"{section}.{key}" in lines, f"{section}.{key} missing from the example"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[genral]\n", "line 1: genral: unknown name. did you mean 'general'?"),
        ("[sqlite]\nmax_writer_stal = 2\n",
         "line 2: sqlite.max_writer_stal: unknown name. did you mean 'max_writer_stall'?"),
        ("[sqlite]\nmax_writer_stall = 'fast'\n",
         "line 2: sqlite.max_writer_stall: expected a number, got a string 'fast'"),
        ("[sqlite]\nover_budget = 'wait'\n",
         "line 2: sqlite.over_budget: 'wait' is not one of pause, stop, fail"),
        ("[sqlite]\nmax_writer_stall = -1\n",
         "line 2: sqlite.max_writer_stall: -1.0 is below the minimum 0"),
        ("[general]\nbackup_dir = 'backups'\n",
         "line 2: general.backup_dir: 'backups' is not an absolute path"),
        ("[selective]\npaths = [1, 2]\n",
         "line 2: selective.paths: expected a list of non-empty strings"),
        ("[selective.retention]\nkeep_daily = true\n",
         "line 2: selective.retention.keep_daily: expected an integer, got a boolean True"),
        ("[database]\npaths = ['x']\n", "line 2: database.paths: unknown name."),
        ("[monitoring]\nping_success = 'ftp://x'\n",
         "line 2: monitoring.ping_success: expected an http:// or https:// URL"),
        ("general = 3\n", "line 1: general: must be a table, not an integer"),
        ("[storage]\nretention = 1\n", "line 2: storage.retention: must be a table"),
        ("[database.retention]\nkeep_last = 0\nkeep_daily = 0\n",
         "line 1: database.retention: no keep rule is set"),
    ],
)
def test_each_mistake_names_key_line_and_expectation(
    tmp_path: Path, text: str, expected: str
) -> None:
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1
    assert problems[0].startswith(expected), problems[0]


def test_several_mistakes_are_reported_together(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        "[general]\nbackup_dir = 'rel'\nfoo = 1\n[sqlite]\nover_budget = 'x'\n[bogus]\n",
    )
    assert len(problems) == 4


def test_toml_syntax_error_names_line(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "[general]\nbackup_dir = \n")
    assert problems[0].startswith("not valid TOML")
    assert "line 2" in problems[0]


def test_missing_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        config.load(tmp_path / "absent.toml")
    assert "file not found" in caught.value.problems[0]
    assert "--config" in caught.value.problems[0]


def test_environment_variable_overrides_default_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(config.ENV_VAR, "/srv/tb.toml")
    assert config.default_path() == Path("/srv/tb.toml")
    monkeypatch.delenv(config.ENV_VAR)
    assert config.default_path() == config.DEFAULT_PATH


def test_config_objects_are_immutable(tmp_path: Path) -> None:
    conf = load_text(tmp_path, "")
    with pytest.raises(AttributeError):
        conf.general.backup_dir = Path("/x")  # type: ignore[misc]


@pytest.mark.parametrize("value", ["['https://hc-ping.com/0f1e2d3c-s3cret']",
                                   "{ url = 'https://hc-ping.com/0f1e2d3c-s3cret' }"])
def test_a_wrong_typed_ping_url_is_reported_without_its_token(tmp_path: Path,
                                                              value: str) -> None:
    problems = problems_of(tmp_path, f"[monitoring]\nping_success = {value}\n")
    assert problems[0].startswith("line 2: monitoring.ping_success: expected a string, got a")
    assert "s3cret" not in "\n".join(problems)
