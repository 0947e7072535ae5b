"""The row filters of the critical type: `TABLE.COLUMN OP INTEGER`, nothing more.

A filter is parsed, never pasted into SQL: the table and the column must be plain
identifiers (and are quoted), the operator one of six, the value an integer (bound as a
parameter). So the configuration cannot inject SQL, and `check` can validate every name
against the live schema.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from trackerbackup.sqlite.connection import quoted

OPERATORS = (">=", "<=", "!=", ">", "<", "=")
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
IDENTIFIER = re.compile(_IDENTIFIER)
_FILTER = re.compile(rf"\s*({_IDENTIFIER})\.({_IDENTIFIER})\s*(>=|<=|!=|>|<|=)\s*(-?\d+)\s*")
SYNTAX = "TABLE.COLUMN OP INTEGER with OP one of " + " ".join(OPERATORS)


@dataclass(frozen=True)
class RowFilter:
    table: str
    column: str
    operator: str
    value: int

    def __str__(self) -> str:
        return f"{self.table}.{self.column} {self.operator} {self.value}"

    def sql(self) -> str:
        """The condition, with the value as the one `?` parameter."""
        return f"{quoted(self.column)} {self.operator} ?"


@dataclass(frozen=True)
class Selection:
    """Which tables are copied, and the filter of the rows of some of them."""

    tables: tuple[str, ...]
    filters: tuple[RowFilter, ...] = ()

    def filter_of(self, table: str) -> RowFilter | None:
        return next((f for f in self.filters if f.table == table), None)


def selection_problems(columns: Mapping[str, list[str]], database: str, selection: Selection,
                       tables_key: str, filters_key: str) -> list[str]:
    """What `check` says: each configured table the database lacks (`columns`: each
    selected table's columns, empty if it has no such table), each filter on a column it
    lacks or on a table that is not copied, each naming its configuration key."""
    problems = [f"{tables_key}: the database {database} has no table {table!r}"
                for table in selection.tables if not columns.get(table)]
    for row_filter in selection.filters:
        filtered = columns.get(row_filter.table)
        if row_filter.table not in selection.tables:
            problems.append(f"{filters_key}: {str(row_filter)!r} filters table "
                            f"{row_filter.table!r}, which {tables_key} does not list")
        elif filtered and row_filter.column not in filtered:
            problems.append(f"{filters_key}: table {row_filter.table!r} has no column "
                            f"{row_filter.column!r} (it has: {', '.join(filtered)})")
    return problems


def parse(text: str) -> RowFilter:
    """Raises ValueError naming the expected syntax."""
    match = _FILTER.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not {SYNTAX} (e.g. \"torrents.completed > 0\")")
    table, column, operator, value = match.groups()
    return RowFilter(table, column, operator, int(value))


def filters_problem(texts: tuple[str, ...]) -> str | None:
    """For the configuration: the first filter that does not parse, or a table filtered
    twice (the filters of one table would have to be combined: say it in one)."""
    seen: set[str] = set()
    for text in texts:
        try:
            table = parse(text).table
        except ValueError as error:
            return str(error)
        if table in seen:
            return f"table {table!r} has two filters; give each table at most one"
        seen.add(table)
    return None


def tables_problem(names: tuple[str, ...]) -> str | None:
    for name in names:
        if not IDENTIFIER.fullmatch(name):
            return f"{name!r} is not a table name (letters, digits and _)"
    if len(set(names)) != len(names):
        return "a table is listed twice"
    return None
