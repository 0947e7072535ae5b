"""Declared settings: a frozen dataclass per TOML table, `setting(default, doc, ...)` per key.

A key's TOML type comes from the field's annotation, its default from the field, its
documentation and limits from `setting`. `keys_of` turns a dataclass into its `Key`s
(refusing a number without bounds), and `read_table` checks a TOML table against them,
collecting every problem with its key path and keeping the default for a bad value, so
one pass reports everything. `config` declares the tables; `config_docs` renders the
example config and the man page from the same keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, get_type_hints

SETTING = "trackerbackup.setting"


class Kind(Enum):
    """The TOML shapes a key can take, each named as an error message says it."""

    STRING = "a string"
    INTEGER = "an integer"
    NUMBER = "a number"
    BOOLEAN = "true or false"
    PATH = "an absolute path"
    OPTIONAL_PATH = "an absolute path or an empty string"
    STRINGS = "a list of strings"
    TABLE = "a table"


KIND_OF_ANNOTATION: dict[Any, Kind] = {
    str: Kind.STRING,
    int: Kind.INTEGER,
    float: Kind.NUMBER,
    bool: Kind.BOOLEAN,
    Path: Kind.PATH,
    Path | None: Kind.OPTIONAL_PATH,
    tuple[str, ...]: Kind.STRINGS,
}
TOML_TYPE: dict[Kind, tuple[type, ...]] = {
    Kind.STRING: (str,),
    Kind.INTEGER: (int,),
    Kind.NUMBER: (int, float),
    Kind.BOOLEAN: (bool,),
    Kind.PATH: (str,),
    Kind.OPTIONAL_PATH: (str,),
    Kind.STRINGS: (list,),
    Kind.TABLE: (dict,),
}


@dataclass(frozen=True)
class Setting:
    """What a key means and which values it takes (besides its type)."""

    doc: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    # The range depends on a sibling key: (its name, {its value: (minimum, maximum)}); for
    # a sibling value not listed, this key is not used.
    range_by: tuple[str, Mapping[str, tuple[int, int]]] | None = None
    check: Callable[[Any], str | None] | None = None  # returns a problem, or None
    secret: bool = False  # never echo the value in a message
    fields: Mapping[str, Setting] | None = None  # a table whose dataclass is not ours


def setting(default: Any, doc: str, **limits: Any) -> Any:
    """A dataclass field that is a configuration key."""
    return dataclasses.field(default=default, metadata={SETTING: Setting(doc, **limits)})


@dataclass(frozen=True)
class Key:
    name: str
    kind: Kind
    default: Any
    setting: Setting
    table: tuple[Key, ...] = ()  # a TABLE's keys
    build: Callable[..., Any] | None = None  # a TABLE's constructor

    @property
    def bounds(self) -> tuple[float, float] | None:
        minimum, maximum = self.setting.minimum, self.setting.maximum
        return None if minimum is None or maximum is None else (minimum, maximum)


def keys_of(cls: type, settings: Mapping[str, Setting] | None = None) -> tuple[Key, ...]:
    """The keys of dataclass `cls`: its fields with a `setting` (or one in `settings`)."""
    hints = get_type_hints(cls)
    keys = []
    for field in dataclasses.fields(cls):
        declared = field.metadata.get(SETTING) if settings is None else settings.get(field.name)
        if declared is None:
            continue  # not read from the file (e.g. a name filled in by the caller)
        keys.append(_key(cls, field, hints[field.name], declared))
    if settings is not None and set(settings) != {k.name for k in keys}:
        raise TypeError(f"{cls.__name__}: settings for {sorted(settings)}, fields "
                        f"{sorted(k.name for k in keys)}")
    return tuple(keys)


def _key(cls: type, field: dataclasses.Field[Any], hint: Any, declared: Setting) -> Key:
    where = f"{cls.__name__}.{field.name}"
    if field.default is dataclasses.MISSING:
        raise TypeError(f"{where}: a configuration key needs a default")
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return Key(field.name, Kind.TABLE, field.default, declared,
                   keys_of(hint, declared.fields), hint)
    kind = KIND_OF_ANNOTATION.get(hint)
    if kind is None:
        raise TypeError(f"{where}: no configuration kind for {hint!r}")
    if kind in (Kind.INTEGER, Kind.NUMBER) and not declared.range_by and (
            declared.minimum is None or declared.maximum is None):
        raise TypeError(f"{where}: a number needs a minimum and a maximum")
    return Key(field.name, kind, field.default, declared)


def table_key(name: str, build: Callable[..., Any], keys: tuple[Key, ...], doc: str) -> Key:
    """A table assembled by the caller (keys chosen or re-defaulted per table)."""
    return Key(name, Kind.TABLE, None, Setting(doc), keys, build)


def read_table(where: str, table: Mapping[str, Any], keys: tuple[Key, ...],
               problems: list[str]) -> dict[str, Any]:
    """Every key's value (the default where missing or wrong); problems are appended."""
    known = {key.name: key for key in keys}
    for name in table:
        if name not in known:
            problems.append(unknown(_path(where, name), name, known))
    values = {key.name: read_value(_path(where, key.name), table.get(key.name), key, problems)
              for key in keys}
    for key in keys:
        if key.setting.range_by is not None:
            sibling = known[key.setting.range_by[0]]
            values[key.name] = _in_sibling_range(where, key, sibling, values, problems)
    return values


def read_value(where: str, value: Any, key: Key, problems: list[str]) -> Any:
    if key.kind is Kind.TABLE:
        return _read_subtable(where, {} if value is None else value, key, problems)
    if value is None:
        return key.default
    problem = _type_problem(value, key)
    if problem is None:
        value = _converted(value, key.kind)
        problem = _value_problem(value, key)
    if problem:
        problems.append(f"{where}: {problem}")
        return key.default
    return value


def _read_subtable(where: str, value: Any, key: Key, problems: list[str]) -> Any:
    if not isinstance(value, dict):
        problems.append(f"{where}: must be a table, not {type_name(value)}")
        value = {}
    values = read_table(where, value, key.table, problems)
    return key.build(**values) if key.build else values


def _type_problem(value: Any, key: Key) -> str | None:
    if not isinstance(value, TOML_TYPE[key.kind]) or (
            isinstance(value, bool) and key.kind is not Kind.BOOLEAN):
        shown = "" if key.setting.secret else f" {value!r}"
        return f"expected {key.kind.value}, got {type_name(value)}{shown}"
    if key.kind is Kind.STRINGS and isinstance(value, list) and not all(
            isinstance(item, str) and item for item in value):
        return "expected a list of non-empty strings"
    return None


def _converted(value: Any, kind: Kind) -> Any:
    if kind is Kind.NUMBER:
        return float(value)
    if kind is Kind.PATH or kind is Kind.OPTIONAL_PATH:
        return Path(value) if value else None
    if kind is Kind.STRINGS:
        return tuple(value)
    return value


def _value_problem(value: Any, key: Key) -> str | None:
    declared = key.setting
    if key.kind is Kind.NUMBER and not math.isfinite(value):
        return f"{value!r} is not a finite number"
    if key.kind in (Kind.PATH, Kind.OPTIONAL_PATH) and not _absolute_or_unset(value, key):
        return f"{str(value or '')!r} is not an absolute path"
    if declared.choices and value not in declared.choices:
        return f"{value!r} is not one of {', '.join(declared.choices)}"
    if declared.minimum is not None and value < declared.minimum:
        return f"{value!r} is below the minimum {number(declared.minimum, key)}"
    if declared.maximum is not None and value > declared.maximum:
        return f"{value!r} is above the maximum {number(declared.maximum, key)}"
    return declared.check(value) if declared.check else None


def _absolute_or_unset(path: Path | None, key: Key) -> bool:
    if path is None:  # an empty string
        return key.kind is Kind.OPTIONAL_PATH
    return path.is_absolute()


def _in_sibling_range(where: str, key: Key, sibling: Key, values: dict[str, Any],
                      problems: list[str]) -> Any:
    assert key.setting.range_by is not None
    ranges = key.setting.range_by[1]
    value, chosen = values[key.name], values[sibling.name]
    if chosen not in ranges:
        return value  # not used with this sibling value
    low, high = ranges[chosen]
    if low <= value <= high:
        return value
    problems.append(f"{_path(where, key.name)}: {value!r} is out of range for {sibling.name} "
                    f"= {chosen!r} ({describe_ranges(key, sibling)})")
    return key.default


def describe_ranges(key: Key, sibling: Key) -> str:
    """'zstd: 1 to 19, gzip: 1 to 9; not used with none' (a key with `range_by`)."""
    assert key.setting.range_by is not None
    ranges = key.setting.range_by[1]
    used = ", ".join(f"{value}: {low} to {high}" for value, (low, high) in ranges.items())
    unused = [choice for choice in sibling.setting.choices if choice not in ranges]
    return used + (f"; not used with {' or '.join(unused)}" if unused else "")


def unknown(where: str, name: str, known: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    suggestion = f" did you mean '{close[0]}'?" if close else ""
    return f"{where}: unknown name.{suggestion} Expected one of: {', '.join(known)}"


def type_name(value: Any) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def number(value: float, key: Key) -> str:
    """A bound as TOML would write it: 0, 4, 1.5, 36_500."""
    return f"{value:g}" if key.kind is Kind.NUMBER else f"{int(value):_}"


def _path(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name
