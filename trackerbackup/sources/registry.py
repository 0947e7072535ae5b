"""The explicit map from backup type to the source that produces it."""

from __future__ import annotations

from collections.abc import Callable

from trackerbackup.config import Config
from trackerbackup.docker import Docker
from trackerbackup.sources import Source
from trackerbackup.sources.database import database_source
from trackerbackup.sources.files import FilesSource


def _selective(config: Config, backup_type: str, docker: Docker) -> Source:
    return FilesSource(config, config.type(backup_type))


SOURCES: dict[str, Callable[[Config, str, Docker], Source]] = {
    "selective": _selective,
    "database": database_source,
}
