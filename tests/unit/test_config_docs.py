"""The example config and trackerbackup.toml(5) are the schema's, key by key.

Both are generated (`nox -s docs`) and committed; these tests fail when a committed copy
is stale, and check the generated text independently of the generator: every key of the
schema, with its default, and no key the schema lacks.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from trackerbackup import config, config_docs
from trackerbackup.backup_types import BY_NAME, TYPES
from trackerbackup.schema import Key, Kind

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "trackerbackup" / "data" / "trackerbackup.toml"
MAN_PAGE = ROOT / "docs" / "man" / "trackerbackup.toml.5"
REGENERATE = "stale: regenerate with 'nox -s docs'"


def test_committed_example_is_the_generated_one() -> None:
    assert EXAMPLE.read_text() == config_docs.example(), REGENERATE


def test_committed_man_page_has_the_generated_key_list() -> None:
    page = MAN_PAGE.read_text()
    assert page == config_docs.with_man_keys(page), REGENERATE


def test_example_holds_every_default_and_no_other_key() -> None:
    document = tomllib.loads(EXAMPLE.read_text())
    expected = {table.name: defaults(table) for table in config.document_keys()}
    assert document == expected


def defaults(table: Key) -> dict[str, object]:
    return {key.name: defaults(key) if key.kind is Kind.TABLE
            else config_docs.toml_value(key.default) for key in table.table}


def man_sections() -> dict[str, str]:
    """'.SH' or '.SS' title -> its text, from the generated part of the page."""
    page = MAN_PAGE.read_text()
    generated = page.split(config_docs.MAN_BEGIN, 1)[1].split(config_docs.MAN_END, 1)[0]
    parts = re.split(r"^\.S[HS] (.+)$", generated, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def man_entries(text: str) -> dict[str, str]:
    """key -> its .TP entry (the lines up to the next .TP)."""
    return {m[1]: m[2] for m in re.finditer(r"^\.TP\n\.B (\S+)\n(.*?)(?=^\.TP$|\Z)", text,
                                            flags=re.M | re.S)}


def test_man_page_documents_every_key_with_its_default_and_no_other() -> None:
    sections = man_sections()
    type_section = ", ".join(f"[{t.name}]" for t in TYPES)
    plain = [t for t in config.document_keys() if t.name not in BY_NAME]
    assert list(sections) == [f"[{t.name}]" for t in plain] + [type_section, "[TYPE.retention]"]
    for table in plain:
        entries = man_entries(sections[f"[{table.name}]"])
        assert list(entries) == [key.name for key in table.table]
        for key in table.table:
            default = config_docs.roff(config_docs.inline(key.default))
            assert f"Default: \\fB{default}\\fR." in entries[key.name], key.name


def test_man_page_gives_each_type_table_key_its_defaults_per_type() -> None:
    sections = man_sections()
    entries = man_entries(sections[", ".join(f"[{t.name}]" for t in TYPES)])
    assert set(entries) == {t.name for t in TYPES} | {
        "enabled", "compression", "compression_level", "paths", "exclude", "tables",
        "row_filters"}
    assert "Default: \\fBtrue\\fR." in entries["enabled"]  # every type can run
    assert "Only in [critical]." in entries["tables"]
    assert '"torrents.completed > 0"' in entries["row_filters"]
    assert "Only in [selective]." in entries["paths"]
    assert '"storage/caddy/data"' in entries["paths"]
    assert "Only in [storage] and [selective]." in entries["exclude"]
    assert "Allowed: zstd: 1 to 19, gzip: 1 to 9; not used with none." in (
        entries["compression_level"])
    retention = man_entries(sections["[TYPE.retention]"])
    assert list(retention) == list(config.RETENTION)
    assert "Default: \\fB7\\fR." in retention["keep_daily"]
    assert ("Default: \\fB1\\fR in [storage] and [database] and [selective]; \\fB96\\fR in "
            "[critical].") in retention["keep_last"]
