"""The operator's VM: Debian 12 with systemd as PID 1, in a container (cgroup v1 recipe).

It talks to the host engine through the mounted socket (sibling containers), and sees the
stack's root at the SAME absolute path, so bind-mount host paths read with `docker inspect`
are valid inside.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tests.kit.wait import wait_until
from tests.testbed import TestbedError
from tests.testbed.engine import DOCKER, docker, require_cgroup_v1, run
from tests.testbed.images import Images, ensure_images
from tests.testbed.lifecycle import UpDown
from tests.testbed.stack import LABEL, Stack

BOOT_TIMEOUT = 60.0


class VM(UpDown):
    """`with VM(stack) as vm: vm.exec("systemctl", "is-system-running")`."""

    def __init__(self, stack: Stack, *, images: Images | None = None,
                 name: str | None = None, sandbox: bool = False) -> None:
        """`sandbox=True` adds CAP_SYS_ADMIN so systemd can build the units' mount
        namespaces (ProtectSystem=, ReadWritePaths=, PrivateTmp=, ...): without it systemd
        in a container skips them silently and a unit's sandbox is not tested. Then the
        stack's root must not lie under /tmp or /var/tmp (PrivateTmp= hides them)."""
        self.stack = stack
        self.name = name or f"{stack.project}-vm"
        self._images = images
        self.sandbox = sandbox

    def up(self) -> None:
        require_cgroup_v1()
        images = self._images or ensure_images()
        root = str(self.stack.root)
        caps = ["--cap-add", "SYS_ADMIN"] if self.sandbox else []
        docker("run", "-d", "--name", self.name, "--hostname", "tracker-vm", *caps,
               "--label", f"{LABEL}={self.stack.project}",
               "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",
               "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
               "-v", "/var/run/docker.sock:/var/run/docker.sock",
               "-v", f"{root}:{root}",
               images.vm)
        self.wait_booted()

    def wait_booted(self, timeout: float = BOOT_TIMEOUT) -> str:
        """Poll `systemctl is-system-running --wait` until running or degraded."""
        deadline = time.monotonic() + timeout
        states: list[str] = []

        def booted() -> str | None:
            proc = self.exec("systemctl", "is-system-running", "--wait", check=False,
                             timeout=max(1.0, deadline - time.monotonic()))
            states.append(proc.stdout.strip())  # too early: "Failed to connect to bus"
            return states[-1] if states[-1] in ("running", "degraded") else None

        try:
            return wait_until(booted, timeout, interval=0.2)
        except TimeoutError:
            logs = docker("logs", "--tail", "40", self.name, check=False)
            raise TestbedError(f"systemd in {self.name} did not reach running/degraded within "
                               f"{timeout:.0f} s (last state {states[-1]!r}); container log:"
                               f"\n{logs}") from None

    def exec(self, *argv: str, env: dict[str, str] | None = None, check: bool = True,
             timeout: float | None = 300, input_text: str | None = None,
             workdir: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command inside the VM as root; `env` values travel by name, never in argv."""
        env_args: list[str] = ["-w", workdir] if workdir else []
        for key in env or {}:
            env_args += ["-e", key]
        proc = run([DOCKER, "exec", "-i", *env_args, self.name, *argv], env=env, check=False,
                   timeout=timeout,
                   input_bytes=input_text.encode() if input_text is not None else None)
        done = subprocess.CompletedProcess(proc.args, proc.returncode,
                                           proc.stdout.decode(errors="replace"),
                                           proc.stderr.decode(errors="replace"))
        if check and done.returncode != 0:
            raise TestbedError(f"in VM {self.name}: {' '.join(argv)} exited "
                               f"{done.returncode}:\n{done.stdout[-1000:]}{done.stderr[-2000:]}")
        return done

    def trackerbackup(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The installed command by hand in a root shell of the VM (outside any unit); any
        exit status is returned. (The host tiers run the checkout: tests.kit.cli.)"""
        return self.exec("trackerbackup", *args, check=False, timeout=600)

    def copy_in(self, path: Path, dest: str | None = None) -> str:
        """Copy a host file or directory into the VM (default: same path); return the path."""
        target = dest or str(path.resolve())
        self.exec("mkdir", "-p", str(Path(target).parent))
        docker("cp", str(path), f"{self.name}:{target}")
        return target

    def install_deb(self, deb: Path) -> None:
        """`apt-get install ./x.deb` inside, offline: every dependency is in the image."""
        inside = self.copy_in(deb, f"/root/{deb.name}")
        self.exec("apt-get", "install", "-y", inside,
                  env={"DEBIAN_FRONTEND": "noninteractive"})

    def write_file(self, dest: str, text: str) -> None:
        self.exec("sh", "-c", 'cat > "$0"', dest, input_text=text)

    def down(self) -> None:
        """Remove the VM container (its mounts go with it)."""
        docker("rm", "-f", "-v", self.name, check=False)
