"""One run, with a stand-in source: what it commits, what it prunes, how it fails."""

from __future__ import annotations

import errno
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from trackerbackup import config, runner
from trackerbackup.errors import EnvironmentProblem
from trackerbackup.repository import PartialBackup, Repository
from trackerbackup.sources import Plan, SourceResult


@dataclass
class StandIn:
    """A source that writes one small artifact, then does `then` (a concurrent event)."""

    then: str = ""

    def plan(self) -> Plan:
        return Plan(items=("stand-in",), estimated_bytes=100)

    def write(self, backup: PartialBackup, plan: Plan) -> SourceResult:
        with backup.artifact("data.zst", "zstd", 3) as out:
            out.write(b"data" * 100)
        if self.then == "unreadable source":
            raise OSError(errno.EIO, "Input/output error", "/srv/source/file")
        if self.then == "newer backup appears":  # a backup whose clock ran ahead of ours
            other = Repository(backup.path.parents[1])
            with other.begin(backup.type) as planted:
                planted.started = datetime.now(UTC)
                with planted.artifact("data.zst", "zstd", 3) as out:
                    out.write(b"other")
                planted.commit({})
        return SourceResult(details={"source": {"kind": "stand-in"}})


def make_config(tmp_path: Path) -> config.Config:
    return config.from_document({
        "general": {"backup_dir": str(tmp_path / "backups"), "run_dir": str(tmp_path / "run")},
        "selective": {"retention": {"keep_last": 1, "keep_daily": 1}},
    })


def run(conf: config.Config, source: StandIn, monkeypatch: pytest.MonkeyPatch) -> runner.RunOutcome:
    monkeypatch.setattr(runner, "make_source", lambda *args: source)
    return runner.run(conf, "selective")


def test_the_outcome_is_the_committed_backup_as_listed(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    conf = make_config(tmp_path)
    outcome = run(conf, StandIn(), monkeypatch)
    assert outcome.backup is not None
    assert Repository(conf.general.backup_dir).backups("selective") == [outcome.backup]


def test_a_run_never_prunes_the_backup_it_made(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    conf = make_config(tmp_path)
    outcome = run(conf, StandIn("newer backup appears"), monkeypatch)
    assert outcome.backup is not None
    assert outcome.pruned == ()
    listed = [b.id for b in Repository(conf.general.backup_dir).backups("selective")]
    assert outcome.backup.id in listed
    assert len(listed) == 2


def test_an_os_error_no_layer_named_is_exit_3_with_its_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = make_config(tmp_path)
    with pytest.raises(EnvironmentProblem) as caught:
        run(conf, StandIn("unreadable source"), monkeypatch)
    assert caught.value.exit_code == 3
    assert caught.value.message == "Input/output error"
    assert caught.value.path == "/srv/source/file"
    assert caught.value.hint is not None
    assert caught.value.hint.startswith("check that path")
    assert Repository(conf.general.backup_dir).backups("selective") == []
