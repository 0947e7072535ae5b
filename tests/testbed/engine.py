"""The Docker engine: use a running one, else install and start `dockerd` ourselves.

Only what we started is stopped again (`Engine.stop`).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.kit.wait import wait_until
from tests.testbed import TestbedError

DOCKER = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"
SOCKET = Path("/var/run/docker.sock")
STATE_DIR = Path("/var/tmp/trackerbackup-testbed")
DOCKERD_LOG = STATE_DIR / "dockerd.log"
DOCKERD_PIDFILE = STATE_DIR / "dockerd.pid"
# Every test bed user holds this shared; the last one out may stop the test bed's dockerd.
ENGINE_LOCK = STATE_DIR / "engine.lock"
START_TIMEOUT = 60.0


def run(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    input_bytes: bytes | None = None,
    timeout: float | None = 600,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command; on failure raise TestbedError with the command and its stderr tail.

    `env` is added to os.environ: secrets go there, never into argv.
    """
    full_env = {**os.environ, **env} if env else None
    proc = subprocess.run(
        argv, input=input_bytes, capture_output=True, env=full_env, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace")[-2000:]
        raise TestbedError(f"command failed (exit {proc.returncode}): {' '.join(argv)}\n{tail}")
    return proc


def docker(*args: str, env: dict[str, str] | None = None, timeout: float | None = 600,
           input_bytes: bytes | None = None, check: bool = True) -> str:
    """Run `/usr/bin/docker ARGS` and return its stdout as text."""
    proc = run([DOCKER, *args], env=env, timeout=timeout, input_bytes=input_bytes, check=check)
    return proc.stdout.decode(errors="replace")


def container_state(name: str) -> str:
    """docker's State.Status of a container: running, paused, exited, created, ..."""
    return docker("inspect", "-f", "{{.State.Status}}", name).strip()


def cgroup_version() -> int:
    """1 for a cgroup v1 (or hybrid) host, 2 for a unified cgroup v2 host."""
    fs_type = run(["stat", "-f", "-c", "%T", "/sys/fs/cgroup"]).stdout.decode().strip()
    return 2 if fs_type == "cgroup2fs" else 1


def require_cgroup_v1() -> None:
    """The VM recipe (systemd as PID 1, /sys/fs/cgroup bind-mounted) is for cgroup v1 hosts."""
    if cgroup_version() != 1:
        raise TestbedError(
            "this host uses cgroup v2 (/sys/fs/cgroup is cgroup2fs): the systemd VM container "
            "recipe of the test bed (-v /sys/fs/cgroup:/sys/fs/cgroup:rw, no --cgroupns) is "
            "verified on cgroup v1 only. Fix: run on a cgroup v1/hybrid host (Debian 12 with "
            "systemd.unified_cgroup_hierarchy=0), or extend tests/testbed/vm.py with "
            "--cgroupns=private and a writable cgroup2 mount."
        )


def engine_answers() -> bool:
    """True if a Docker engine answers on the socket."""
    if not SOCKET.exists():
        return False
    proc = run([DOCKER, "version", "--format", "{{.Server.Version}}"], check=False, timeout=20)
    return proc.returncode == 0


def ensure_packages(*packages: str) -> None:
    """`apt-get install -y` the Debian packages that are not installed yet."""
    missing = [p for p in packages if run(["dpkg", "-s", p], check=False).returncode != 0]
    if not missing:
        return
    if os.geteuid() != 0:
        raise TestbedError(f"packages {missing} are missing; run as root or install them")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    if run(["apt-get", "install", "-y", *missing], env=env, check=False).returncode != 0:
        run(["apt-get", "update"], env=env)
        run(["apt-get", "install", "-y", *missing], env=env)


@dataclass
class Engine:
    """A Docker engine that answers.

    `started_by_us`: the test bed started this dockerd (this process, or an earlier test bed
    process whose pidfile names it), so `stop` may end it once no other user is left.
    """

    started_by_us: bool
    pid: int | None = None
    lock_fd: int | None = None

    def release(self) -> bool:
        """Drop our shared hold; True if no other test bed user holds the engine."""
        if self.lock_fd is None:
            return True
        fcntl.flock(self.lock_fd, fcntl.LOCK_UN)
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def close(self) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    def stop_if_last(self) -> bool:
        """Stop the test bed's dockerd if we are its last user and no container runs."""
        try:
            if self.release() and self.started_by_us and not docker("ps", "-q").split():
                self.stop()
                return True
            return False
        finally:
            self.close()

    def stop(self) -> None:
        """Stop dockerd if (and only if) the test bed started it; wait for it to exit."""
        if not self.started_by_us or self.pid is None:
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        pid = self.pid
        try:
            wait_until(lambda: not _pid_alive(pid), 30, interval=0.2)
        except TimeoutError:
            raise TestbedError(f"dockerd (pid {pid}) did not stop within 30 s; "
                               f"see {DOCKERD_LOG}") from None
        DOCKERD_PIDFILE.unlink(missing_ok=True)
        self.pid = None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child (ours) still "exists": reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        stat = Path(f"/proc/{pid}/stat")
        return stat.exists() and ") Z " not in stat.read_text()


def _testbed_dockerd_pid() -> int | None:
    """The pid in our pidfile, if that process is a live dockerd."""
    try:
        pid = int(DOCKERD_PIDFILE.read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ValueError):
        return None
    return pid if comm == "dockerd" else None


def ensure_engine() -> Engine:
    """Return an answering engine, starting dockerd in the background when none runs.

    The returned Engine holds a shared lock on ENGINE_LOCK until `stop_if_last`/`close`.
    """
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    fd = os.open(ENGINE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        # A user of an answering engine needs only the shared lock (no one can stop the
        # engine while it is held). Asking for the exclusive one first would wait until
        # every other running session has ended.
        fcntl.flock(fd, fcntl.LOCK_SH)
        if engine_answers():
            pid = _testbed_dockerd_pid()
            engine = Engine(started_by_us=pid is not None, pid=pid)
        else:
            fcntl.flock(fd, fcntl.LOCK_EX)  # one starter at a time
            engine = _ensure_engine()
            fcntl.flock(fd, fcntl.LOCK_SH)
    except BaseException:
        os.close(fd)
        raise
    engine.lock_fd = fd
    return engine


def _ensure_engine() -> Engine:
    if engine_answers():
        pid = _testbed_dockerd_pid()
        return Engine(started_by_us=pid is not None, pid=pid)
    if os.geteuid() != 0:
        raise TestbedError("no Docker engine answers on /var/run/docker.sock and we are not "
                           "root: start dockerd, or run the tests as root")
    if not Path(DOCKERD).exists() or not Path(DOCKER).exists():
        ensure_packages("docker.io")
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with DOCKERD_LOG.open("ab") as log:
        proc = subprocess.Popen(
            [DOCKERD], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    DOCKERD_PIDFILE.write_text(f"{proc.pid}\n")

    def answers() -> bool:
        if proc.poll() is not None:
            raise TestbedError(f"dockerd exited with status {proc.returncode} at start; "
                               f"see {DOCKERD_LOG}")
        return engine_answers()

    try:
        wait_until(answers, START_TIMEOUT, interval=0.2)
    except TimeoutError:
        proc.terminate()
        raise TestbedError(f"dockerd did not answer on {SOCKET} within {START_TIMEOUT:.0f} s; "
                           f"see {DOCKERD_LOG}") from None
    return Engine(started_by_us=True, pid=proc.pid)


def stop_engine_from_pidfile() -> None:
    """Stop the test bed's dockerd (pidfile) if no test bed user and no container is left."""
    if not engine_answers():
        return
    engine = ensure_engine()
    if not engine.stop_if_last():
        print("dockerd left running: not started by the test bed, or still in use")


def which_or_fail(name: str, package: str) -> str:
    """Absolute path of a program, installing its Debian package if it is missing."""
    found = shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found:
        return found
    ensure_packages(package)
    found = shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if not found:
        raise TestbedError(f"{name} not found even after installing {package}")
    return found
