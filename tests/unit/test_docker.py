"""The docker boundary against a fake docker CLI (the real engine is in tests/e2e)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from trackerbackup import docker as docker_module
from trackerbackup.docker import Docker, host_path_from_mounts
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
