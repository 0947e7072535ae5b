"""The critical type's row filters: a strict grammar, so nothing from the configuration
reaches SQL unparsed."""

from __future__ import annotations

import pytest

from trackerbackup.rowfilter import RowFilter, filters_problem, parse, tables_problem


def test_a_filter_is_parsed_into_its_parts_and_the_value_is_a_parameter() -> None:
    row_filter = parse("  torrents.completed>=-3 ")

    assert row_filter == RowFilter("torrents", "completed", ">=", -3)
    assert row_filter.sql() == '"completed" >= ?'
    assert str(row_filter) == "torrents.completed >= -3"


@pytest.mark.parametrize("text", [
    "torrents.completed > 0; DROP TABLE keys", "torrents.completed > '0'",
    "completed > 0", "torrents.completed >> 0", "torrents.completed > 1.5",
    "tor rents.completed > 0", 'torrents."completed" > 0',
])
def test_anything_but_table_column_operator_integer_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"TABLE\.COLUMN OP INTEGER"):
        parse(text)
    assert filters_problem((text,)) is not None


def test_one_filter_per_table() -> None:
    assert filters_problem(("torrents.completed > 0", "keys.valid_until > 5")) is None
    problem = filters_problem(("torrents.completed > 0", "torrents.id < 9"))
    assert problem == "table 'torrents' has two filters; give each table at most one"


def test_tables_are_plain_names_listed_once() -> None:
    assert tables_problem(("keys", "_testbed_seq")) is None
    assert tables_problem(("keys", 'x"; --')) == (
        "'x\"; --' is not a table name (letters, digits and _)")
    assert tables_problem(("keys", "keys")) == "a table is listed twice"
