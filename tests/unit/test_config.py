"""Every class of configuration mistake gets an error naming the file, key and line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from trackerbackup import config
from trackerbackup.backup_types import SELECTIVE_DEFAULT_PATHS, TYPES, BackupType
from trackerbackup.errors import ConfigError, ExitCode
from trackerbackup.schema import Key, Kind, keys_of, setting

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
    assert conf.general.storage_dir is None
    assert conf.general.storage == Path("/opt/torrust/storage")
    assert conf.general.backup_dir == Path("/var/backups/trackerbackup")
    assert conf.tracker.service == "tracker"
    assert conf.sqlite.path_in_container == "/var/lib/torrust/tracker/database/tracker.db"
    assert conf.type("selective").paths == SELECTIVE_DEFAULT_PATHS
    assert "storage/caddy/data" in conf.type("selective").paths
    assert ".env" in conf.type("selective").paths
    assert conf.type("database").retention.keep_daily == 7


def test_shipped_example_is_valid_and_equals_the_defaults(tmp_path: Path) -> None:
    example = config.load(EXAMPLE)
    defaults = load_text(tmp_path, "")
    assert example == config.Config(source=str(EXAMPLE), general=defaults.general,
                                    tracker=defaults.tracker, sqlite=defaults.sqlite,
                                    monitoring=defaults.monitoring, types=defaults.types)


def key_paths(keys: tuple[Key, ...], prefix: str = "") -> list[str]:
    """'general', 'general.backup_dir', ..., 'database.retention.keep_last'."""
    paths = []
    for key in keys:
        paths.append(prefix + key.name)
        paths += key_paths(key.table, f"{prefix}{key.name}.")
    return paths


def test_example_sets_every_key_and_no_other() -> None:
    """Key by key (the values are compared with the defaults above; an extra key would
    fail to load)."""
    set_in_example = set(config.key_lines(EXAMPLE.read_text()))
    assert set_in_example == set(key_paths(config.document_keys()))


def test_a_type_that_cannot_run_is_disabled_by_default(tmp_path: Path) -> None:
    conf = load_text(tmp_path, "")
    assert {name: settings.enabled for name, settings in conf.types.items()} == {
        t.name: t.available for t in TYPES}
    assert config.load(EXAMPLE).type("storage").enabled is True
    planned = BackupType("planned", "a type without a source", available=False)
    [enabled] = [k for k in config.type_keys(planned) if k.name == "enabled"]
    assert enabled.default is False


def test_each_type_table_has_only_its_own_keys() -> None:
    tables = {key.name: key for key in config.document_keys()}
    assert [k.name for k in tables["database"].table] == [
        "enabled", "compression", "compression_level", "retention"]
    assert [k.name for k in tables["storage"].table] == [
        "enabled", "compression", "compression_level", "exclude", "retention"]
    assert [k.name for k in tables["selective"].table] == [
        "enabled", "compression", "compression_level", "paths", "exclude", "retention"]


def test_every_number_has_bounds() -> None:
    numbers = [k for k in all_keys(config.document_keys())
               if k.kind in (Kind.INTEGER, Kind.NUMBER)]
    assert {k.name for k in numbers} == {
        "min_free_bytes", "max_writer_stall", "compression_level", "keep_last", "keep_daily",
        "keep_weekly", "keep_monthly", "max_age_days", "timeout"}
    for key in numbers:
        assert key.bounds is not None or key.setting.range_by is not None, key.name


def all_keys(keys: tuple[Key, ...]) -> list[Key]:
    return [k for key in keys for k in (key, *all_keys(key.table))]


def test_a_number_declared_without_bounds_is_refused() -> None:
    @dataclass(frozen=True)
    class Unbounded:
        count: int = setting(1, "how many")

    with pytest.raises(TypeError, match=r"Unbounded\.count: a number needs a minimum and a max"):
        keys_of(Unbounded)


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
        # Bounds (issue 14, item 7): the level's range depends on the compression.
        ("[database]\ncompression_level = 100000\n",
         "line 2: database.compression_level: 100000 is out of range for compression = 'zstd' "
         "(zstd: 1 to 19, gzip: 1 to 9; not used with none)"),
        ("[selective]\ncompression = 'gzip'\ncompression_level = 12\n",
         "line 3: selective.compression_level: 12 is out of range for compression = 'gzip' "),
        ("[database]\ncompression_level = 0\n",
         "line 2: database.compression_level: 0 is out of range for compression = 'zstd' "),
        ("[sqlite]\nmax_writer_stall = nan\n",
         "line 2: sqlite.max_writer_stall: nan is not a finite number"),
        ("[sqlite]\nmax_writer_stall = inf\n",
         "line 2: sqlite.max_writer_stall: inf is not a finite number"),
        ("[sqlite]\nmax_writer_stall = 5\n",
         "line 2: sqlite.max_writer_stall: 5.0 is above the maximum 4"),
        ("[general]\nmin_free_bytes = -1\n",
         "line 2: general.min_free_bytes: -1 is below the minimum 0"),
        ("[general]\nmin_free_bytes = 1_000_000_000_000_000_001\n",
         "line 2: general.min_free_bytes: 1000000000000000001 is above the maximum "
         "1_000_000_000_000_000_000"),
        ("[storage.retention]\nkeep_daily = 100000\n",
         "line 2: storage.retention.keep_daily: 100000 is above the maximum 36_500"),
        ("[selective.retention]\nmax_age_days = -3\n",
         "line 2: selective.retention.max_age_days: -3 is below the minimum 0"),
        ("[general]\nstorage_dir = 'storage'\n",
         "line 2: general.storage_dir: 'storage' is not an absolute path"),
        ("[tracker]\ndriver = 'postgres'\n",
         "line 2: tracker.driver: 'postgres' is not one of sqlite, mysql"),
    ],
)
def test_each_mistake_names_key_line_and_expectation(
    tmp_path: Path, text: str, expected: str
) -> None:
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1
    assert problems[0].startswith(expected), problems[0]


def test_compression_none_ignores_the_level(tmp_path: Path) -> None:
    conf = load_text(tmp_path, "[database]\ncompression = 'none'\ncompression_level = 100000\n")
    assert conf.type("database").compression == "none"


def test_each_bound_itself_is_allowed(tmp_path: Path) -> None:
    conf = load_text(tmp_path, "[general]\nmin_free_bytes = 1_000_000_000_000_000_000\n"
                     "[sqlite]\nmax_writer_stall = 4\n"
                     "[database]\ncompression_level = 19\n"
                     "[selective]\ncompression = 'gzip'\ncompression_level = 9\n"
                     "[storage.retention]\nkeep_last = 0\nkeep_daily = 36_500\n")
    assert (conf.general.min_free_bytes, conf.sqlite.max_writer_stall) == (10**18, 4.0)
    assert conf.type("database").compression_level == 19
    assert conf.type("selective").compression_level == 9
    assert conf.type("storage").retention.keep_daily == 36_500


def test_the_secret_keys_are_the_ping_urls_and_the_mysql_password() -> None:
    ping_urls = {"monitoring.ping_start", "monitoring.ping_success", "monitoring.ping_failure"}
    assert {*ping_urls, "mysql.password"} == config.SECRET_KEYS


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
    assert caught.value.problems == [
        f"file not found; copy the example {config.example_path()} there, or pass "
        f"--config PATH (or set {config.ENV_VAR})"]
    assert config.example_path().read_text() == EXAMPLE.read_text()  # a file that exists


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
