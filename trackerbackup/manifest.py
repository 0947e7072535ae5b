"""The manifest of a backup (`manifest.toml`) and its verification record
(`verification.toml`), as typed records: the contract of docs/format.md.

Readers check `format` first: a newer or unknown format is an error (exit 2), never a
guess. Keys this reader does not know are ignored (a newer writer of the same format may
add them). Every value is type-checked: a manifest that is not what this module would
write makes its backup unreadable (listed as such, never as verified), not a crash.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tomli_w

from trackerbackup.atomic import write_atomically
from trackerbackup.errors import TrackerBackupError, UsageError
from trackerbackup.log import printable
from trackerbackup.safefs import NotARegularFile, read_small_file

FORMAT = 1
MANIFEST = "manifest.toml"
VERIFICATION = "verification.toml"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
COMPRESSIONS = ("zstd", "gzip", "none")


class ManifestError(TrackerBackupError):
    """A manifest or verification record that cannot be trusted (exit 1)."""


class UnknownFormat(UsageError):
    """Written by a newer trackerbackup (exit 2)."""


@dataclass(frozen=True)
class ArtifactRecord:
    name: str
    size: int
    sha256: str
    raw_size: int
    raw_sha256: str
    compression: str
    verification: str = ""

    def to_toml(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "name": self.name, "size": self.size, "sha256": self.sha256,
            "raw_size": self.raw_size, "raw_sha256": self.raw_sha256,
            "compression": self.compression,
        }
        if self.verification:
            record["verification"] = self.verification
        return record


@dataclass(frozen=True)
class Manifest:
    """What a committed backup holds. `source` is the source kind's own record (its
    "kind" key says which module of trackerbackup/sources/ reads and restores it)."""

    type: str
    id: str
    started: datetime
    finished: datetime
    tool_version: str
    host: str
    verified: bool
    artifacts: tuple[ArtifactRecord, ...]
    source: dict[str, Any]
    warnings: tuple[str, ...] = ()
    format: int = FORMAT

    @property
    def kind(self) -> str:
        return str(self.source.get("kind", ""))

    @property
    def size(self) -> int:
        return sum(artifact.size for artifact in self.artifacts)

    def to_toml(self) -> dict[str, Any]:
        return {
            "format": self.format, "type": self.type, "id": self.id,
            "started": self.started.isoformat(), "finished": self.finished.isoformat(),
            "tool_version": self.tool_version, "host": self.host, "verified": self.verified,
            "source": self.source, "warnings": list(self.warnings),
            "artifacts": [artifact.to_toml() for artifact in self.artifacts],
        }


@dataclass(frozen=True)
class VerificationRecord:
    """The outcome of the newest `trackerbackup verify` of a backup."""

    verified_at: datetime
    ok: bool
    checks: tuple[str, ...]
    problem: str = ""
    tool_version: str = ""
    format: int = FORMAT

    def to_toml(self) -> dict[str, Any]:
        return {"format": self.format, "verified_at": self.verified_at.isoformat(),
                "result": "ok" if self.ok else "failed", "checks": list(self.checks),
                "problem": self.problem, "tool_version": self.tool_version}


# --------------------------------------------------------------------------- reading


def read_manifest(directory: Path) -> Manifest:
    return parse_manifest(_load(directory / MANIFEST), directory / MANIFEST)


def read_verification(directory: Path) -> VerificationRecord | None:
    path = directory / VERIFICATION
    if not path.exists() and not path.is_symlink():
        return None
    data = _load(path)
    _check_format(data, path)
    fields = _Fields(data, path)
    result = fields.text("result")
    if result not in ("ok", "failed"):
        raise ManifestError(f"result is {result!r}, not 'ok' or 'failed'", op="read verification",
                            path=str(path))
    return VerificationRecord(
        verified_at=fields.moment("verified_at"), ok=result == "ok",
        checks=fields.texts("checks"), problem=fields.text("problem", ""),
        tool_version=fields.text("tool_version", ""),
    )


def write_verification(directory: Path, record: VerificationRecord) -> None:
    write_atomically(directory / VERIFICATION, tomli_w.dumps(record.to_toml()).encode())


def write_manifest(directory: Path, manifest: Manifest) -> None:
    write_atomically(directory / MANIFEST, render_manifest(manifest))


def render_manifest(manifest: Manifest) -> bytes:
    """TOML bytes; every string made printable (a file name that is not UTF-8 included:
    TOML is UTF-8, and such a name in a warning must not make the commit fail)."""
    return tomli_w.dumps(_printable(manifest.to_toml())).encode("utf-8")


def _printable(value: Any) -> Any:
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable(str(k)): _printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_printable(v) for v in value]
    return value


def parse_manifest(data: dict[str, Any], path: Path) -> Manifest:
    _check_format(data, path)
    fields = _Fields(data, path)
    artifacts = tuple(_artifact(item, path) for item in fields.tables("artifacts"))
    if not artifacts:
        raise ManifestError("the manifest lists no artifact", op="read manifest", path=str(path))
    started, finished = fields.moment("started"), fields.moment("finished")
    if finished < started:
        raise ManifestError("finished before it started", op="read manifest", path=str(path))
    return Manifest(
        type=fields.text("type"), id=fields.text("id"), started=started, finished=finished,
        tool_version=fields.text("tool_version", ""), host=fields.text("host", ""),
        verified=fields.flag("verified"), artifacts=artifacts,
        source=fields.table("source", {}), warnings=fields.texts("warnings"),
    )


def _artifact(data: dict[str, Any], path: Path) -> ArtifactRecord:
    fields = _Fields(data, path, prefix="artifacts.")
    name = fields.text("name")
    if not is_plain_name(name) or name in (MANIFEST, VERIFICATION):
        raise ManifestError(f"artifact name {name!r} is not a plain file name",
                            op="read manifest", path=str(path))
    compression = fields.text("compression")
    if compression not in COMPRESSIONS:
        raise ManifestError(f"unknown compression {compression!r}", op="read manifest",
                            path=str(path))
    return ArtifactRecord(
        name=name, size=fields.count("size"), sha256=fields.digest("sha256"),
        raw_size=fields.count("raw_size"), raw_sha256=fields.digest("raw_sha256"),
        compression=compression, verification=fields.text("verification", ""),
    )


def is_plain_name(name: str) -> bool:
    """A name that stays inside its directory and is not one of ours (hidden, temporary)."""
    return bool(name) and "/" not in name and "\0" not in name and not name.startswith(".")


def _load(path: Path) -> dict[str, Any]:
    """Reads a small regular file without following a symlink or blocking on a FIFO."""
    try:
        raw = read_small_file(path, MAX_MANIFEST_BYTES)
    except OSError as error:
        raise ManifestError(f"cannot open: {error.strerror}", op="read manifest",
                            path=str(path)) from error
    except NotARegularFile as error:
        raise ManifestError(str(error), op="read manifest", path=str(path)) from error
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ManifestError(f"not valid TOML: {error}", op="read manifest",
                            path=str(path)) from error


def _check_format(data: dict[str, Any], path: Path) -> None:
    version = data.get("format")
    if type(version) is not int:
        raise ManifestError("no integer 'format' key", op="read manifest", path=str(path))
    if version != FORMAT:
        raise UnknownFormat(
            f"format {version} is not one this trackerbackup reads (it reads {FORMAT})",
            op="read manifest", path=str(path),
            hint="a newer trackerbackup wrote it: upgrade the package to read it",
        )


@dataclass(frozen=True)
class _Fields:
    """Typed access to one TOML table; every mismatch is a ManifestError naming the key."""

    data: dict[str, Any]
    path: Path
    prefix: str = field(default="")

    def _get(self, key: str, kind: type, default: Any) -> Any:
        if key not in self.data:
            if default is _REQUIRED:
                self._fail(key, "is missing")
            return default
        value = self.data[key]
        if type(value) is not kind:
            self._fail(key, f"is a {type(value).__name__}, not a {kind.__name__}")
        return value

    def _fail(self, key: str, what: str) -> None:
        raise ManifestError(f"{self.prefix}{key} {what}", op="read manifest", path=str(self.path))

    def text(self, key: str, default: Any = None) -> str:
        return str(self._get(key, str, _REQUIRED if default is None else default))

    def flag(self, key: str) -> bool:
        return bool(self._get(key, bool, False))

    def count(self, key: str) -> int:
        value = int(self._get(key, int, _REQUIRED))
        if value < 0:
            self._fail(key, "is negative")
        return value

    def digest(self, key: str) -> str:
        value = self.text(key)
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            self._fail(key, "is not a sha256 hex digest")
        return value

    def moment(self, key: str) -> datetime:
        try:
            value = datetime.fromisoformat(self.text(key))
        except ValueError:
            self._fail(key, "is not an ISO 8601 time")
            raise
        if value.tzinfo is None:
            self._fail(key, "has no time zone")
        return value.astimezone(UTC)

    def texts(self, key: str) -> tuple[str, ...]:
        values = self._get(key, list, [])
        if not all(type(item) is str for item in values):
            self._fail(key, "is not a list of strings")
        return tuple(values)

    def table(self, key: str, default: dict[str, Any]) -> dict[str, Any]:
        return dict(self._get(key, dict, default))

    def tables(self, key: str) -> list[dict[str, Any]]:
        values = self._get(key, list, _REQUIRED)
        if not all(type(item) is dict for item in values):
            self._fail(key, "is not a list of tables")
        return list(values)


_REQUIRED = object()
