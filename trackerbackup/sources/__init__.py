"""What gets snapshotted. Every source has the same small shape (`Source`).

A source first makes a `Plan` (what it would back up, an estimate of the bytes it needs,
warnings) without writing anything; `run --dry-run` and `check` stop there. Then `write`
puts its artifacts into a partial backup and returns what the manifest should record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from trackerbackup.repository import PartialBackup


@dataclass(frozen=True)
class Plan:
    items: tuple[str, ...]
    estimated_bytes: int
    warnings: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceResult:
    """What the manifest records about the source, and any warnings for the log."""

    details: dict[str, Any]
    warnings: tuple[str, ...] = ()


class Source(Protocol):
    def plan(self) -> Plan: ...

    def write(self, backup: PartialBackup, plan: Plan) -> SourceResult: ...
