"""Monitoring: the Prometheus textfile and the healthchecks-style pings."""

from __future__ import annotations

import logging
import os
import re
import socket
import stat
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.kit.pings import Ping, PingRecorder
from trackerbackup import monitoring
from trackerbackup.log import LOGGER_NAME

FINISHED = datetime(2026, 11, 26, 3, 0, 0, tzinfo=UTC)

# The text exposition format, strictly: comment lines, or one sample per line.
_METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE = re.compile(
    rf"^(?P<name>{_METRIC_NAME})(?:\{{(?P<labels>{_LABEL}(?:,{_LABEL})*)?\}})? "
    r"(?P<value>[-+]?(?:[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|Inf|NaN))$"
)
_HELP = re.compile(rf"^# HELP (?P<name>{_METRIC_NAME}) \S.*$")
_TYPE = re.compile(rf"^# TYPE (?P<name>{_METRIC_NAME}) (counter|gauge|histogram|summary|untyped)$")


def publish(directory: Path, backup_type: str, *, success: bool = True,
            finished: datetime = FINISHED, duration_s: float = 1,
            size_bytes: int | None = 1) -> None:
    monitoring.write_textfile(directory, backup_type, success=success, finished=finished,
                              duration_s=duration_s, size_bytes=size_bytes)


def parse(text: str) -> dict[str, tuple[dict[str, str], float]]:
    """Parse and validate a textfile: each family has HELP and TYPE before its sample."""
    assert text.endswith("\n"), "the last line must end with a newline"
    samples: dict[str, tuple[dict[str, str], float]] = {}
    helped: set[str] = set()
    typed: set[str] = set()
    for line in text.splitlines():
        if m := _HELP.match(line):
            helped.add(m["name"])
        elif m := _TYPE.match(line):
            assert m["name"] not in typed, f"TYPE given twice: {line}"
            typed.add(m["name"])
        else:
            m = _SAMPLE.match(line)
            assert m is not None, f"not a valid sample line: {line!r}"
            name = m["name"]
            assert name in helped, f"sample before HELP: {line}"
            assert name in typed, f"sample before TYPE: {line}"
            labels = dict(
                re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m["labels"] or "")
            )
            samples[name] = (labels, float(m["value"]))
    return samples


def read(directory: Path, backup_type: str) -> dict[str, tuple[dict[str, str], float]]:
    return parse((directory / f"trackerbackup_{backup_type}.prom").read_text())


def test_success_writes_every_metric_with_its_type_label(tmp_path: Path) -> None:
    publish(tmp_path, "database", duration_s=12.5, size_bytes=123_456_789)

    samples = read(tmp_path, "database")

    assert samples == {
        "trackerbackup_last_success_timestamp_seconds": (
            {"type": "database"},
            FINISHED.timestamp(),
        ),
        "trackerbackup_last_run_timestamp_seconds": ({"type": "database"}, FINISHED.timestamp()),
        "trackerbackup_last_run_success": ({"type": "database"}, 1.0),
        "trackerbackup_last_duration_seconds": ({"type": "database"}, 12.5),
        "trackerbackup_last_size_bytes": ({"type": "database"}, 123_456_789.0),
    }


def test_textfile_parses_with_the_reference_parser(tmp_path: Path) -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    publish(tmp_path, "storage", duration_s=0.25, size_bytes=7)

    text = (tmp_path / "trackerbackup_storage.prom").read_text()
    families = {f.name: f for f in parser.text_string_to_metric_families(text)}

    assert families["trackerbackup_last_run_success"].type == "gauge"
    sample = families["trackerbackup_last_size_bytes"].samples[0]
    assert (sample.labels, sample.value) == ({"type": "storage"}, 7.0)


def test_failure_keeps_last_success_and_size(tmp_path: Path) -> None:
    publish(tmp_path, "selective", duration_s=3, size_bytes=42)
    later = FINISHED + timedelta(days=1)

    publish(tmp_path, "selective", success=False, finished=later, duration_s=1.5, size_bytes=None)

    samples = read(tmp_path, "selective")
    assert samples["trackerbackup_last_success_timestamp_seconds"][1] == FINISHED.timestamp()
    assert samples["trackerbackup_last_size_bytes"][1] == 42
    assert samples["trackerbackup_last_run_timestamp_seconds"][1] == later.timestamp()
    assert samples["trackerbackup_last_run_success"][1] == 0
    assert samples["trackerbackup_last_duration_seconds"][1] == 1.5


def test_failure_without_any_success_has_no_success_timestamp(tmp_path: Path) -> None:
    publish(tmp_path, "database", success=False, size_bytes=None)

    samples = read(tmp_path, "database")
    assert "trackerbackup_last_success_timestamp_seconds" not in samples
    assert samples["trackerbackup_last_run_success"][1] == 0


def test_types_have_separate_files_and_do_not_touch_each_other(tmp_path: Path) -> None:
    publish(tmp_path, "database")
    before = (tmp_path / "trackerbackup_database.prom").read_bytes()

    publish(tmp_path, "storage", success=False, size_bytes=None)

    assert (tmp_path / "trackerbackup_database.prom").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "trackerbackup_database.prom",
        "trackerbackup_storage.prom",
    ]


def test_atomic_write_leaves_no_temp_files_and_is_world_readable(tmp_path: Path) -> None:
    for i in range(5):
        publish(tmp_path, "database", success=i % 2 == 0, duration_s=i, size_bytes=i)

    assert [p.name for p in tmp_path.iterdir()] == ["trackerbackup_database.prom"]
    mode = stat.S_IMODE((tmp_path / "trackerbackup_database.prom").stat().st_mode)
    assert mode == 0o644  # node_exporter runs as another user


def test_failed_write_raises_oserror_and_leaves_no_temp_file(tmp_path: Path) -> None:
    publish(tmp_path, "database")
    before = (tmp_path / "trackerbackup_database.prom").read_bytes()
    # A directory where the file should go makes the final rename fail.
    blocked = tmp_path / "blocked"
    (blocked / "trackerbackup_database.prom").mkdir(parents=True)

    with pytest.raises(IsADirectoryError):
        publish(blocked, "database")

    assert [p.name for p in blocked.iterdir()] == ["trackerbackup_database.prom"]
    assert (tmp_path / "trackerbackup_database.prom").read_bytes() == before


@pytest.mark.parametrize("planted", ["fifo", "symlink"])
def test_a_planted_textfile_is_replaced_not_read(tmp_path: Path, planted: str) -> None:
    """A FIFO in place of the previous file must not hang a failed run reading it back; a
    symlink must not be followed to read (or overwrite) another file."""
    path = tmp_path / "trackerbackup_database.prom"
    target = tmp_path / "elsewhere"
    target.write_text(f"{monitoring.LAST_SUCCESS}{{type=\"database\"}} 42\n")
    if planted == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to(target)
    writer = threading.Thread(target=publish, args=(tmp_path, "database"),
                              kwargs={"success": False}, daemon=True)
    writer.start()
    writer.join(timeout=10)
    if writer.is_alive():  # release the blocked reader before failing
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        writer.join(timeout=10)
        pytest.fail("reading the previous textfile blocked on a FIFO")
    assert monitoring.LAST_SUCCESS not in read(tmp_path, "database")
    assert path.is_file()
    assert not path.is_symlink()
    assert target.read_text().endswith(" 42\n")


def test_missing_directory_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        publish(tmp_path / "absent", "database")


def test_naive_datetime_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        publish(tmp_path, "database", finished=datetime(2026, 1, 1))


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    # The trackerbackup logger does not propagate once set up: attach caplog to it.
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)


# --- pings ---------------------------------------------------------------------------


def test_ping_without_body_is_a_get(ping_server: PingRecorder) -> None:
    assert monitoring.ping(f"{ping_server.url}/0f1e2d3c-secret/start") is True

    assert ping_server.received == [Ping("GET", "/0f1e2d3c-secret/start", b"")]


def test_ping_posts_the_body(ping_server: PingRecorder) -> None:
    tail = "error: dump failed\nexit status 2\n"

    assert monitoring.ping(f"{ping_server.url}/uuid/fail", tail) is True

    assert ping_server.received == [Ping("POST", "/uuid/fail", tail.encode())]


def test_ping_body_is_capped_keeping_its_end(ping_server: PingRecorder) -> None:
    body = "x" * monitoring.PING_BODY_MAX_BYTES + "THE END"

    assert monitoring.ping(f"{ping_server.url}/uuid/fail", body) is True

    [sent] = ping_server.received
    assert len(sent.body) == monitoring.PING_BODY_MAX_BYTES
    assert sent.body.endswith(b"THE END")


def test_ping_http_error_returns_false_and_masks_the_url(
    ping_server: PingRecorder,
    logs: pytest.LogCaptureFixture,
) -> None:
    ping_server.status = 404

    assert monitoring.ping(f"{ping_server.url}/very-secret-token?key=hunter2") is False

    assert "HTTP 404" in logs.text
    assert "very-secret-token" not in logs.text
    assert "hunter2" not in logs.text


def test_unreachable_url_returns_false_quickly(logs: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    started = time.monotonic()
    assert monitoring.ping(f"http://127.0.0.1:{port}/secret-uuid", "body", timeout=2) is False
    assert time.monotonic() - started < 2

    assert "failed" in logs.text
    assert "secret-uuid" not in logs.text


def test_silent_server_times_out() -> None:
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        started = time.monotonic()
        assert monitoring.ping(f"http://127.0.0.1:{port}/x", timeout=0.5) is False
        assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    "url", ["", "not a url", "file:///etc/shadow", "ftp://h/x", "http://[::1/x"]
)
def test_unsupported_or_malformed_urls_return_false(url: str) -> None:
    assert monitoring.ping(url) is False


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/ping/tok en-s3cret",
    "http://127.0.0.1:9/ping/tok\ten-s3cret?k=v",
    "http://127.0.0.1:9/ping/token-s3cret\n",
])
def test_a_url_with_a_space_or_control_character_is_refused_without_its_token(
    url: str, logs: pytest.LogCaptureFixture
) -> None:
    assert monitoring.ping(url) is False
    assert "space or a control character" in logs.text
    assert "s3cret" not in logs.text
    assert monitoring.url_problem(url) is not None


def test_an_error_message_never_shows_the_url_in_any_quoting() -> None:
    url = "https://hc.example/ping/s3cret tok/c%20d?key=hunter2"
    for leaked in ("/ping/s3cret%20tok/c%2520d", "/ping/s3cret tok/c d", "key=hunter2",
                   "'s3cret tok'", url):
        masked = monitoring.masked_text(f"bad: {leaked}", url)
        assert "s3cret" not in masked
        assert "hunter2" not in masked


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("https://hc-ping.com/0f1e2d3c-4b5a-6978", "https://hc-ping.com/***"),
        ("https://user:pw@example.org:8443/p?k=v", "https://example.org:8443/***"),
        ("http://127.0.0.1:9/", "http://127.0.0.1:9/"),
        ("https://example.org?token=x", "https://example.org/***"),
        ("http://[::1]:80/ping/abc", "http://[::1]:80/***"),
        ("garbage", "<invalid URL>"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert monitoring.mask_url(url) == masked
