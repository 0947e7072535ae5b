"""The docker boundary against a fake docker CLI (the real engine is in tests/e2e)."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest

from trackerbackup import docker as docker_module
from trackerbackup.docker import Container, Docker, host_path_from_mounts
from trackerbackup.errors import EnvironmentProblem

MOUNTS = [
    {"Type": "bind", "Source": "/opt/torrust/storage/tracker/lib",
     "Destination": "/var/lib/torrust/tracker"},
    {"Type": "bind", "Source": "/opt/torrust/storage/tracker/etc",
     "Destination": "/etc/torrust/tracker"},
    {"Type": "bind", "Source": "/srv/db", "Destination": "/var/lib/torrust/tracker/database"},
]


def test_host_path_uses_the_longest_matching_mount() -> None:
    path = host_path_from_mounts(MOUNTS, "tracker", "/var/lib/torrust/tracker/database/tracker.db")
    assert path == Path("/srv/db/tracker.db")
    assert host_path_from_mounts(MOUNTS, "tracker", "/etc/torrust/tracker/tracker.toml") == Path(
        "/opt/torrust/storage/tracker/etc/tracker.toml")


def test_unmounted_path_names_the_config_keys() -> None:
    with pytest.raises(EnvironmentProblem) as caught:
        host_path_from_mounts(MOUNTS, "tracker", "/data/tracker.db")
    assert "sqlite.host_path" in str(caught.value)
    assert "'tracker'" in str(caught.value)


def fake_docker(tmp_path: Path, containers: list[dict[str, object]]) -> Docker:
    """A docker CLI stand-in answering `ps` and `inspect` from a JSON list."""
    state = tmp_path / "containers.json"
    state.write_text(json.dumps(containers))
    script = tmp_path / "docker"
    script.write_text(textwrap.dedent(f"""\
        #!/usr/bin/python3
        import json, sys
        containers = json.load(open({str(state)!r}))
        args = sys.argv[1:]
        if args[0] == "ps":
            filters = [a.split("=", 1)[1] for a in args if a.startswith("label=")]
            for c in containers:
                labels = [f"{{k}}={{v}}" for k, v in c["Config"]["Labels"].items()]
                if all(f in labels for f in filters):
                    names = " " + c["Name"].lstrip("/") if "{{{{.Names}}}}" in args[-1] else ""
                    print(c["Id"] + names)
        elif args[0] == "inspect":
            found = [c for c in containers if args[-1] in (c["Id"], c["Name"].lstrip("/"))]
            if not found:
                sys.stderr.write("Error: No such container: " + args[-1])
                sys.exit(1)
            print(json.dumps(found))
        """))
    script.chmod(0o755)
    return Docker(str(script))


def container(cid: str, name: str, project: str, service: str, status: str = "running"
              ) -> dict[str, object]:
    return {"Id": cid, "Name": "/" + name, "State": {"Status": status}, "Mounts": MOUNTS,
            "Config": {"Labels": {"com.docker.compose.project": project,
                                  "com.docker.compose.service": service}}}


def test_finds_by_compose_labels(tmp_path: Path) -> None:
    docker = fake_docker(tmp_path, [container("a1", "torrust-tracker-1", "torrust", "tracker"),
                                    container("b2", "other", "other", "tracker")])
    found = docker.find("torrust", "tracker", "tracker")
    assert (found.id, found.name, found.state) == ("a1", "torrust-tracker-1", "running")


def test_falls_back_to_the_container_name(tmp_path: Path) -> None:
    docker = fake_docker(tmp_path, [container("c3", "tracker", "", "")])
    assert docker.find("torrust", "tracker", "tracker").id == "c3"


def test_absent_container_says_how_to_fix(tmp_path: Path) -> None:
    docker = fake_docker(tmp_path, [])
    with pytest.raises(EnvironmentProblem) as caught:
        docker.find("torrust", "tracker", "tracker")
    message = str(caught.value)
    assert "no container of service 'tracker' in compose project 'torrust'" in message
    assert "general.compose_project" in message


def test_two_running_matches_are_ambiguous(tmp_path: Path) -> None:
    docker = fake_docker(tmp_path, [container("a1", "t1", "torrust", "tracker"),
                                    container("a2", "t2", "torrust", "tracker")])
    with pytest.raises(EnvironmentProblem, match="several containers"):
        docker.find("torrust", "tracker", "tracker")


def test_missing_cli_is_an_environment_problem(tmp_path: Path) -> None:
    with pytest.raises(EnvironmentProblem, match=r"general\.docker"):
        Docker(str(tmp_path / "no-docker")).find("torrust", "tracker", "tracker")


def test_an_engine_that_does_not_answer_is_an_environment_problem_not_a_hang(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Seen on the test bed: `docker exec` waiting on a paused container blocked every
    # `docker inspect` of it, and a storage run (which inspects every container) hung.
    script = tmp_path / "docker"
    script.write_text("#!/bin/sh\nexec sleep 30\n")
    script.chmod(0o755)
    monkeypatch.setattr(docker_module, "CALL_TIMEOUT_S", 0.5)

    with pytest.raises(EnvironmentProblem) as caught:
        Docker(str(script)).running_mounts()

    assert "the Docker engine did not answer in time" in str(caught.value)
    assert "unpause or restart that container" in (caught.value.hint or "")


def exec_that_goes_quiet(tmp_path: Path, inspect: str) -> Docker:
    """`docker exec` sends a row, then nothing (a command in a frozen container);
    `docker inspect` runs `inspect` (shell)."""
    script = tmp_path / "docker"
    script.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        case "$1" in
            exec) echo row; exec sleep 60 ;;
            inspect) {inspect} ;;
        esac
        """))
    script.chmod(0o755)
    return Docker(str(script))


QUIET = Container(id="0a1b2c", name="mysql", state="running")


@pytest.mark.parametrize(("inspect", "said", "hint"), [
    ("echo paused", "container 'mysql' is paused", "docker unpause mysql"),
    ("echo exited", "container 'mysql' is exited", "docker start mysql"),
    ("echo 'Error: No such container: 0a1b2c' >&2; exit 1", "container 'mysql' is gone",
     "docker start mysql"),
    ("exec sleep 30", "the Docker engine did not answer about container 'mysql'",
     "journalctl -u docker"),
], ids=["paused", "stopped", "removed", "engine-silent"])
def test_a_command_in_a_frozen_container_is_stopped_with_the_cause_not_waited_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inspect: str, said: str,
        hint: str) -> None:
    monkeypatch.setattr(docker_module, "QUIET_CHECK_S", 0.3)
    monkeypatch.setattr(docker_module, "STATE_TIMEOUT_S", 0.5)
    monkeypatch.setattr(docker_module, "FREEZER_FILES", ())
    started = time.monotonic()

    with pytest.raises(EnvironmentProblem) as caught:
        exec_that_goes_quiet(tmp_path, inspect).exec_output(QUIET, ["mysqldump"], op="dump")

    assert said in str(caught.value)
    assert hint in (caught.value.hint or "")
    assert caught.value.exit_code == 3
    assert time.monotonic() - started < 20


def test_a_quiet_command_in_a_running_container_is_left_to_finish(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(docker_module, "QUIET_CHECK_S", 0.2)
    script = tmp_path / "docker"
    script.write_text('#!/bin/sh\ncase "$1" in\n  exec) sleep 1; echo done ;;\n'
                      '  inspect) echo running ;;\nesac\n')
    script.chmod(0o755)

    assert Docker(str(script)).exec_output(QUIET, ["mysql"], op="restore") == "done\n"


@pytest.mark.parametrize(("content", "frozen"), [
    ("FROZEN\n", True), ("FREEZING\n", True), ("THAWED\n", False), ("1\n", True),
    ("0\n", False)])
def test_cgroup_frozen_reads_the_containers_freezer(tmp_path: Path, content: str,
                                                    frozen: bool) -> None:
    (tmp_path / "0a1b2c").mkdir()
    (tmp_path / "0a1b2c" / "state").write_text(content)
    files = (str(tmp_path / "absent-{id}"), str(tmp_path / "{id}" / "state"))

    assert docker_module.cgroup_frozen("0a1b2c", files) is frozen
    assert docker_module.cgroup_frozen("other", files) is False
