"""What monitoring sees of a run: a Prometheus textfile and healthchecks-style pings.

Textfile: one file per backup type, `trackerbackup_<type>.prom` in node_exporter's
textfile collector directory. One file per type means runs of different types never
race on a shared file; only the type's own previous file is read back, to keep the last
success timestamp and size across failed runs. Each file is published atomically (temp
name without the `.prom` suffix in the same directory, fsync, rename, fsync of the
directory), so node_exporter never reads half a file. Alert on
`time() - trackerbackup_last_success_timestamp_seconds`.

Pings: `ping()` never raises; a failed ping is a warning. A ping URL is a secret (its
path or query is the check's token), so it is only ever logged masked.
"""

from __future__ import annotations

import contextlib
import math
import re
import urllib.parse
from datetime import datetime
from pathlib import Path

from trackerbackup import __version__
from trackerbackup.atomic import write_atomically
from trackerbackup.log import get_logger
from trackerbackup.safefs import NotARegularFile, read_small_file

PING_TIMEOUT_S = 10.0
# healthchecks.io keeps the first 100 kB of a ping body; the end of a log matters most.
PING_BODY_MAX_BYTES = 100_000
TEXTFILE_MAX_BYTES = 64 << 10

LAST_SUCCESS = "trackerbackup_last_success_timestamp_seconds"
LAST_RUN = "trackerbackup_last_run_timestamp_seconds"
LAST_RUN_SUCCESS = "trackerbackup_last_run_success"
LAST_DURATION = "trackerbackup_last_duration_seconds"
LAST_SIZE = "trackerbackup_last_size_bytes"

# Same HELP text in every type's file: node_exporter merges the families of all files.
HELP: dict[str, str] = {
    LAST_SUCCESS: "Unix time the last successful backup of this type finished.",
    LAST_RUN: "Unix time the last backup run of this type finished, successful or not.",
    LAST_RUN_SUCCESS: "1 if the last backup run of this type succeeded, else 0.",
    LAST_DURATION: "Duration of the last backup run of this type in seconds.",
    LAST_SIZE: "Size in bytes of the last successful backup of this type.",
}
# Kept from the previous file when a run fails.
KEPT_ON_FAILURE = (LAST_SUCCESS, LAST_SIZE)

_UNSAFE_URL_CHAR = re.compile(r"[\x00-\x20\x7f]")
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+(?P<value>\S+)")


def textfile_path(directory: Path, backup_type: str) -> Path:
    return directory / f"trackerbackup_{backup_type}.prom"


def write_textfile(
    directory: Path,
    backup_type: str,
    *,
    success: bool,
    finished: datetime,
    duration_s: float,
    size_bytes: int | None,
) -> None:
    """Publish this run's metrics for `backup_type`; raises OSError if that fails.

    `finished` must be timezone-aware. After a failed run, the last success timestamp
    and size of the previous file are kept (absent if there never was a success).
    The caller decides whether a monitoring failure matters (normally: a warning).
    """
    if finished.tzinfo is None:
        raise ValueError("finished must be a timezone-aware datetime")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", backup_type):
        raise ValueError(f"not a backup type: {backup_type!r}")
    path = textfile_path(directory, backup_type)
    values: dict[str, float] = {}
    if success:
        values[LAST_SUCCESS] = finished.timestamp()
        if size_bytes is not None:
            values[LAST_SIZE] = float(size_bytes)
    else:
        previous = _read_samples(path)
        for name in KEPT_ON_FAILURE:
            if name in previous:
                values[name] = previous[name]
    values[LAST_RUN] = finished.timestamp()
    values[LAST_RUN_SUCCESS] = 1.0 if success else 0.0
    values[LAST_DURATION] = max(0.0, float(duration_s))
    # node_exporter runs as another user; the metrics are not secret, and the service's
    # UMask=0077 would otherwise hide them.
    write_atomically(path, render(backup_type, values).encode(), mode=0o644)


def render(backup_type: str, values: dict[str, float]) -> str:
    """Prometheus text exposition format, families in a fixed order."""
    label = f'{{type="{_escape_label(backup_type)}"}}'
    lines: list[str] = []
    for name, help_text in HELP.items():
        if name not in values:
            continue
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} gauge")
        lines.append(f"{name}{label} {_format_value(values[name])}")
    return "\n".join(lines) + "\n"


def _format_value(value: float) -> str:
    if math.isfinite(value) and value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _read_samples(path: Path) -> dict[str, float]:
    """The samples of our own previous file; unreadable or garbled lines are ignored, and
    anything but a small regular file (a FIFO, a symlink) is not read at all."""
    samples: dict[str, float] = {}
    try:
        text = read_small_file(path, TEXTFILE_MAX_BYTES).decode("utf-8")
    except (OSError, NotARegularFile, UnicodeDecodeError):
        return samples
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        with contextlib.suppress(ValueError):
            samples[match["name"]] = float(match["value"])
    return samples


def mask_url(url: str) -> str:
    """scheme://host[:port]/*** — the path, query and user info may be secrets."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "<invalid URL>"
    if not parts.scheme or not host:
        return "<invalid URL>"
    if ":" in host:
        host = f"[{host}]"
    hidden = "/***" if (parts.path not in ("", "/") or parts.query or parts.fragment) else "/"
    return f"{parts.scheme}://{host}{port}{hidden}"


def url_problem(url: str) -> str | None:
    """Why `url` cannot be pinged (never quoting it: it holds a token), or None."""
    if _UNSAFE_URL_CHAR.search(url):
        return "it contains a space or a control character (percent-encode it: %20)"
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return "it is not a valid URL"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return "only http:// and https:// URLs with a host are supported"
    return None


def secret_parts(url: str) -> list[str]:
    """Every piece of `url` that may be a secret, as sent and as quoted or unquoted in
    error messages, longest first."""
    try:
        parts = urllib.parse.urlsplit(url)
        pieces = [parts.path, parts.query, parts.fragment, parts.username or "",
                  parts.password or "", *parts.path.split("/"), *parts.query.split("&")]
    except ValueError:
        pieces = [url]
    forms = {form for p in pieces for form in (p, urllib.parse.quote(p, safe="/"),
                                                urllib.parse.unquote(p), repr(p)[1:-1])}
    # Shorter pieces ("/", "ping") are no secret, and hiding them would garble messages.
    return sorted((f for f in forms if len(f) >= 4), key=len, reverse=True)


def masked_text(text: str, url: str) -> str:
    """`text` (an error message about `url`) with every secret piece of the URL hidden."""
    text = text.replace(url, mask_url(url))
    for piece in secret_parts(url):
        text = text.replace(piece, "***")
    return text


def ping(url: str, body: str | None = None, timeout: float = PING_TIMEOUT_S) -> bool:
    """GET `url`, or POST `body` (e.g. a log tail) to it; True on a 2xx answer.

    Never raises: a failed ping is logged as a warning (URL masked) and returns False.
    """
    masked = mask_url(url)
    logger = get_logger()
    problem = url_problem(url)
    if problem is not None:
        logger.warning("ping %s skipped: %s", masked, problem)
        return False
    data = None
    if body is not None:
        data = body.encode("utf-8", errors="replace")[-PING_BODY_MAX_BYTES:]
    # Here, not at the top: http.client, ssl and email are a tenth of a second of every
    # run's start-up, and most runs ping nothing.
    import urllib.error
    import urllib.request

    try:
        request = urllib.request.Request(  # noqa: S310 - scheme checked above
            url,
            data=data,
            method="GET" if data is None else "POST",
            headers={"User-Agent": f"trackerbackup/{__version__}"},
        )
        if data is not None:
            request.add_header("Content-Type", "text/plain; charset=utf-8")
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status = int(response.status)
            response.read(1024)
    except urllib.error.HTTPError as exc:
        logger.warning("ping %s failed: HTTP %s", masked, exc.code)
        return False
    except Exception as exc:  # a ping must never break a run
        reason = getattr(exc, "reason", exc)
        logger.warning("ping %s failed: %s", masked, masked_text(str(reason), url))
        return False
    if not 200 <= status < 300:
        logger.warning("ping %s failed: HTTP %s", masked, status)
        return False
    logger.debug("ping %s ok", masked)
    return True


LAST_VERIFIED = "trackerbackup_last_verified_timestamp_seconds"
LAST_VERIFY_SUCCESS = "trackerbackup_last_verify_success"
VERIFY_HELP: dict[str, str] = {
    LAST_VERIFIED: "Unix time the newest backup of this type last passed `trackerbackup verify`.",
    LAST_VERIFY_SUCCESS: "1 if the last verification of this type passed, else 0.",
}


def verify_textfile_path(directory: Path, backup_type: str) -> Path:
    return directory / f"trackerbackup_{backup_type}_verify.prom"


def write_verify_textfile(directory: Path, backup_type: str, *, ok: bool,
                          verified_at: datetime) -> None:
    """Publish the outcome of a verification of `backup_type` (its own file, so a verify
    and a backup run of the same type never race); a failure keeps the last success."""
    _write_status_file(verify_textfile_path(directory, backup_type), backup_type,
                       VERIFY_HELP, ok=ok, at=verified_at)


LAST_OFFSITE = "trackerbackup_offsite_last_success_timestamp_seconds"
LAST_OFFSITE_SUCCESS = "trackerbackup_offsite_last_run_success"
OFFSITE_HELP: dict[str, str] = {
    LAST_OFFSITE: "Unix time every local backup of this type was last found off-site.",
    LAST_OFFSITE_SUCCESS: "1 if the last off-site push of this type succeeded, else 0.",
}


def offsite_textfile_path(directory: Path, backup_type: str) -> Path:
    return directory / f"trackerbackup_{backup_type}_offsite.prom"


def write_offsite_textfile(directory: Path, backup_type: str, *, ok: bool,
                           finished: datetime) -> None:
    """Publish the outcome of an off-site push of `backup_type` (its own file); a failure
    keeps the last success. Alert on time() - trackerbackup_offsite_last_success_..."""
    _write_status_file(offsite_textfile_path(directory, backup_type), backup_type,
                       OFFSITE_HELP, ok=ok, at=finished)


def _write_status_file(path: Path, backup_type: str, help_texts: dict[str, str], *,
                       ok: bool, at: datetime) -> None:
    """Two families: (last success time, last outcome); the time survives a failure."""
    success_name, outcome_name = help_texts
    values = {name: value for name, value in _read_samples(path).items()
              if name == success_name}
    if ok:
        values[success_name] = at.timestamp()
    values[outcome_name] = 1.0 if ok else 0.0
    label = f'{{type="{_escape_label(backup_type)}"}}'
    lines = []
    for name, help_text in help_texts.items():
        if name in values:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge",
                      f"{name}{label} {_format_value(values[name])}"]
    write_atomically(path, ("\n".join(lines) + "\n").encode(), mode=0o644)
