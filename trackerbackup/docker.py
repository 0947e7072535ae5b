"""The Docker boundary: the only code that runs the docker CLI.

It finds the tracker's containers the way Compose labels them (project + service), falling
back to the container name, and maps paths inside a container to host paths through the
container's bind mounts.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from trackerbackup import execute
from trackerbackup.errors import EnvironmentProblem

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    state: str  # docker's State.Status: running, paused, exited, created, ...


# A query or a state change of the engine answers in well under a second; one that does not
# answer in minutes is a wedged engine (seen: a container whose `docker exec` waits on a
# pause blocks every `inspect` of it), and a backup must fail rather than hang.
CALL_TIMEOUT_S = 120.0

# A command run in a container that sends nothing for QUIET_CHECK_S is asked after: in a
# paused or stopped container it never ends, and neither would its `docker exec`. While an
# exec waits on a pause the engine may not answer `inspect` either, so the freezer of the
# container's cgroup is read first (cgroup v1, then v2 with the cgroupfs or systemd driver).
QUIET_CHECK_S = 15.0
STATE_TIMEOUT_S = 20.0
FREEZER_FILES = ("/sys/fs/cgroup/freezer/docker/{id}/freezer.state",
                 "/sys/fs/cgroup/docker/{id}/cgroup.freeze",
                 "/sys/fs/cgroup/system.slice/docker-{id}.scope/cgroup.freeze")


def cgroup_frozen(container_id: str, files: Sequence[str] | None = None) -> bool:
    """Whether the kernel has the container's processes frozen (a `docker pause`), as far
    as this host's cgroup file system shows it (False where it does not)."""
    for pattern in FREEZER_FILES if files is None else files:
        try:
            with open(pattern.format(id=container_id), encoding="ascii") as handle:
                state = handle.read(64).strip()
        except (OSError, UnicodeDecodeError):
            continue
        return state in ("1", "FROZEN", "FREEZING")
    return False


class Docker:
    def __init__(self, binary: str = "/usr/bin/docker") -> None:
        self.binary = binary

    def _run(self, *args: str, op: str, timeout: float | None = None) -> str:
        self._require_cli(op)
        try:
            result = execute.run((self.binary, *args), op=op,
                                 timeout=timeout or CALL_TIMEOUT_S)
        except execute.CommandFailed as error:
            raise _engine_problem(error, op) from error
        return result.stdout.decode()

    def _require_cli(self, op: str) -> None:
        if shutil.which(self.binary) is None:
            raise EnvironmentProblem(
                f"docker CLI not found at {self.binary}",
                op=op,
                hint="install docker.io (or docker-ce-cli), or set general.docker",
            )

    def _exec_argv(self, container: Container, command: Sequence[str], *, stdin: bool,
                   env_names: Sequence[str]) -> tuple[str, ...]:
        # `-e NAME` without a value: docker takes the value from its own environment, so
        # a secret passed this way never appears in any argv.
        env_args = tuple(arg for name in env_names for arg in ("-e", name))
        return (self.binary, "exec", *(("-i",) if stdin else ()), *env_args, container.id,
                *command)

    def exec_stream(self, container: Container, command: Sequence[str], *, op: str,
                    stdout_to: Callable[[bytes], object] | None = None,
                    stdin_from: IO[bytes] | None = None,
                    env: Mapping[str, str] | None = None) -> execute.Streamed:
        """Run `command` inside the container, streaming its stdout to `stdout_to` and its
        stdin from `stdin_from`; `env`: variables (secrets) passed by name only."""
        self._require_cli(op)
        env = dict(env or {})
        argv = self._exec_argv(container, command, stdin=stdin_from is not None,
                               env_names=tuple(env))
        try:
            return execute.stream(argv, stdout_to=stdout_to, stdin_from=stdin_from, op=op,
                                  secrets=tuple(env.values()),
                                  env={**os.environ, **env} if env else None,
                                  stuck=lambda: self._frozen_under(container, op),
                                  stuck_every=QUIET_CHECK_S)
        except execute.CommandFailed as error:
            raise _engine_problem(error, op, container) from error

    def _frozen_under(self, container: Container, op: str) -> EnvironmentProblem | None:
        """Why a quiet command in `container` will never end, or None if it may."""
        state = "paused" if cgroup_frozen(container.id) else self._state(container)
        if state == "running":
            return None
        name = container.name
        if state is None:
            return EnvironmentProblem(
                f"the Docker engine did not answer about container '{name}' while the "
                f"command in it sent nothing for {QUIET_CHECK_S:.0f} s; the command was "
                "stopped", op=op, hint="check the engine and the container (docker ps; "
                "journalctl -u docker), then retry")
        return EnvironmentProblem(
            f"container '{name}' is {state}: the command in it sent nothing for "
            f"{QUIET_CHECK_S:.0f} s and was stopped", op=op,
            hint=f"unpause it (docker unpause {name}) and retry" if state == "paused"
            else f"start it (docker start {name}) and retry")

    def _state(self, container: Container) -> str | None:
        """The container's state; "gone" once removed; None if the engine does not say."""
        try:
            state = self._run("inspect", "--type", "container", "--format",
                              "{{.State.Status}}", container.id,
                              op=f"inspect container {container.name}",
                              timeout=STATE_TIMEOUT_S)
        except execute.CommandFailed as error:
            return "gone" if "No such" in error.stderr_tail else None
        except EnvironmentProblem:  # no answer in time, no engine, no CLI
            return None
        return state.strip() or None

    def exec_output(self, container: Container, command: Sequence[str], *, op: str,
                    env: Mapping[str, str] | None = None) -> str:
        """The (short) stdout of `command` run inside the container."""
        chunks: list[bytes] = []
        self.exec_stream(container, command, op=op, stdout_to=chunks.append, env=env)
        return b"".join(chunks).decode("utf-8", "replace")

    def find(self, project: str, service: str, fallback_name: str) -> Container:
        """The container of a Compose service, by labels first, then by name."""
        op = f"find the {service} container"
        out = self._run(
            "ps", "--all", "--no-trunc", "--format", "{{.ID}}",
            "--filter", f"label={PROJECT_LABEL}={project}",
            "--filter", f"label={SERVICE_LABEL}={service}",
            op=op,
        )
        ids = out.split()
        if not ids and fallback_name:
            out = self._run("ps", "--all", "--no-trunc", "--format", "{{.ID}} {{.Names}}", op=op)
            ids = [line.split()[0] for line in out.splitlines()
                   if line.split()[1:] == [fallback_name]]
        if not ids:
            raise EnvironmentProblem(
                f"no container of service '{service}' in compose project '{project}' "
                f"and none named '{fallback_name}'",
                op=op,
                hint="start the stack (docker compose up -d), or set general.compose_project "
                "and tracker.service / tracker.container to match it",
            )
        containers = [self.container(container_id) for container_id in ids]
        running = [c for c in containers if c.state in ("running", "paused")]
        if len(running) > 1:
            names = ", ".join(c.name for c in running)
            raise EnvironmentProblem(
                f"several containers match service '{service}': {names}",
                op=op,
                hint="set general.compose_project to the right project",
            )
        return running[0] if running else containers[0]

    def inspect(self, ref: str) -> dict[str, Any]:
        out = self._run("inspect", "--type", "container", ref, op=f"inspect container {ref}")
        data: list[dict[str, Any]] = json.loads(out)
        return data[0]

    def container(self, ref: str) -> Container:
        data = self.inspect(ref)
        return Container(id=data["Id"], name=data["Name"].lstrip("/"),
                         state=data["State"]["Status"])

    def host_path(self, container: Container, path_in_container: str) -> Path:
        """The host path behind `path_in_container`, through the longest matching mount."""
        return host_path_from_mounts(
            self.inspect(container.id).get("Mounts") or [], container.name, path_in_container
        )

    def running_mounts(self) -> list[tuple[Container, list[dict[str, Any]]]]:
        """Every running or paused container with its mounts: what may write a host file."""
        out = self._run("ps", "--no-trunc", "--format", "{{.ID}}", op="list containers")
        found = []
        for container_id in out.split():
            data = self.inspect(container_id)
            container = Container(id=data["Id"], name=data["Name"].lstrip("/"),
                                  state=data["State"]["Status"])
            found.append((container, list(data.get("Mounts") or [])))
        return found

    def pause(self, container: Container) -> None:
        self._run("pause", container.id, op=f"pause container {container.name}")

    def unpause(self, container: Container) -> None:
        self._run("unpause", container.id, op=f"unpause container {container.name}")

    def stop(self, container: Container, timeout_s: int = 30) -> None:
        self._run("stop", "--time", str(timeout_s), container.id,
                  op=f"stop container {container.name}", timeout=timeout_s + CALL_TIMEOUT_S)

    def start(self, container: Container) -> None:
        self._run("start", container.id, op=f"start container {container.name}")


def _engine_problem(error: execute.CommandFailed, op: str, container: Container | None = None
                    ) -> execute.CommandFailed | EnvironmentProblem:
    """An environment problem (exit 3) for what is the engine's or container's state."""
    tail = error.stderr_tail
    if error.returncode == -1 and "timed out after" in tail:
        return EnvironmentProblem(
            "the Docker engine did not answer in time", op=op,
            hint="check it (docker ps; journalctl -u docker): a container stuck in a pause, "
            "a removal or an exec can block it; unpause or restart that container, or "
            "restart the engine, then retry")
    if "Cannot connect to the Docker daemon" in tail:
        return EnvironmentProblem("the Docker engine is not reachable", op=op,
                                  hint="start it (systemctl start docker) and check "
                                  "/run/docker.sock")
    if container is not None and ("is not running" in tail or "No such container" in tail):
        return EnvironmentProblem(f"container '{container.name}' is not running", op=op,
                                  hint=f"start it (docker start {container.name}) and retry")
    return error


def host_path_from_mounts(
    mounts: list[dict[str, Any]], container_name: str, path_in_container: str
) -> Path:
    target = PurePosixPath(path_in_container)
    best: tuple[PurePosixPath, str] | None = None
    for mount in mounts:
        destination = PurePosixPath(mount.get("Destination", ""))
        if (target == destination or destination in target.parents) and (
            best is None or len(destination.parts) > len(best[0].parts)
        ):
            best = (destination, mount.get("Source", ""))
    if best is None or not best[1]:
        raise EnvironmentProblem(
            f"{path_in_container} is not on any mount of container '{container_name}'",
            op="resolve the database path",
            hint="set sqlite.path_in_container to a path under the tracker's bind mount, "
            "or set sqlite.host_path to the file on the host",
        )
    destination, source = best
    return Path(source) / target.relative_to(destination)


def containers_mounting(mounted: list[tuple[Container, list[dict[str, Any]]]],
                        host_path: Path) -> list[Container]:
    """The containers that see `host_path` (as named, or as the kernel resolves it)
    through one of their mounts."""
    spellings = {PurePosixPath(os.path.abspath(host_path)),
                 PurePosixPath(os.path.realpath(host_path))}
    found = []
    for container, mounts in mounted:
        sources = [PurePosixPath(m["Source"]) for m in mounts if m.get("Source")]
        if any(path == source or source in path.parents
               for path in spellings for source in sources):
            found.append(container)
    return found
