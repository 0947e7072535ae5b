"""Journal records carry a fixed MESSAGE_ID per event and TRACKERBACKUP_* fields."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from trackerbackup import log
from trackerbackup.log import Event, fields


def test_message_ids_are_unique_128_bit_hex() -> None:
    ids = [event.value for event in Event]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_journal_handler_sends_structured_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[str, dict[str, Any]]] = []
    log.setup("journal")
    handler = log.get_logger().handlers[0]
    assert isinstance(handler, log.JournalHandler)
    monkeypatch.setattr(handler, "_send", lambda message, **kw: sent.append((message, kw)))
    log.get_logger().warning("backup %s failed", "x",
                             extra=fields(Event.RUN_FAILED, type="database", size=12, id=None))
    [(message, record)] = sent
    assert message == "backup x failed"
    assert record["MESSAGE_ID"] == Event.RUN_FAILED.value
    assert record["TRACKERBACKUP_EVENT"] == "RUN_FAILED"
    assert record["TRACKERBACKUP_TYPE"] == "database"
    assert record["TRACKERBACKUP_SIZE"] == "12"
    assert "TRACKERBACKUP_ID" not in record
    assert record["PRIORITY"] == "4"
    assert record["SYSLOG_IDENTIFIER"] == "trackerbackup"


def test_records_pass_the_real_journal_send(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the socket write is replaced: python3-systemd's own argument checks run."""
    journal = pytest.importorskip("systemd.journal")
    sent: list[tuple[str, ...]] = []
    monkeypatch.setattr(journal, "sendv", lambda *args: sent.append(args))
    log.setup("journal")
    log.get_logger().error("failed", extra=fields(Event.RUN_FAILED, type="selective"))
    [args] = sent
    assert "MESSAGE=failed" in args
    assert f"MESSAGE_ID={Event.RUN_FAILED.value}" in args
    assert "TRACKERBACKUP_TYPE=selective" in args
    assert any(a.startswith("CODE_LINE=") for a in args)


def test_auto_target_uses_the_journal_only_under_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    log.setup("auto")
    assert isinstance(log.get_logger().handlers[0], logging.StreamHandler)
    monkeypatch.setenv("INVOCATION_ID", "abc")
    log.setup("auto")
    assert isinstance(log.get_logger().handlers[0], log.JournalHandler)


def test_progress_is_shown_on_a_terminal_only(capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log.Progress, "enabled", True)
    monkeypatch.setattr(log.Progress, "INTERVAL", 0.0)
    progress = log.Progress("writing tracker.db.zst", 4 * 2**20)
    progress.advance(2**21)
    progress.finish()
    shown = capsys.readouterr().err
    assert "writing tracker.db.zst: 2 MiB of 4 (50%)" in shown
    monkeypatch.setattr(log.Progress, "enabled", False)
    log.Progress("quiet", None).advance(10)
    assert capsys.readouterr().err == ""


def test_file_names_that_are_not_utf8_reach_the_journal_escaped(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """journald takes UTF-8: a name decoded with surrogateescape would make the real send
    raise (and the record be lost); control characters would garble a terminal."""
    journal = pytest.importorskip("systemd.journal")
    sent: list[tuple[str, ...]] = []
    monkeypatch.setattr(journal, "sendv", lambda *args: sent.append(args))
    name = b"/srv/caf\xe9\x1b[2J".decode("utf-8", "surrogateescape")
    log.setup("journal")
    log.get_logger().warning("changed while read: %s", name, extra=fields(path=name))
    [args] = sent
    assert all(isinstance(a, str) and a.encode("utf-8") for a in args)
    assert "MESSAGE=changed while read: /srv/caf\\xe9\\x1b[2J" in args
    assert "TRACKERBACKUP_PATH=/srv/caf\\xe9\\x1b[2J" in args


@pytest.mark.parametrize(("text", "shown"), [
    ("plain ascii", "plain ascii"),
    ("unicode é ok", "unicode é ok"),
    (b"\xff\xfe".decode("utf-8", "surrogateescape"), "\\xff\\xfe"),
    ("tab\tand\nnewline", "tab\\x09and\\x0anewline"),
    ("\ud800 lone", "\\ud800 lone"),
])
def test_printable(text: str, shown: str) -> None:
    assert log.printable(text) == shown
