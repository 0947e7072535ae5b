"""An sftp server container for off-site tests: openssh-server, key auth, repository in /srv.

restic runs on the host and reaches it through `-o sftp.command=ssh ...` with a key made
for the test; the container can be stopped, started and paused (an unreachable server).
With `storage_mb`, /srv/restic is a tmpfs of that size, which `fill` fills up (a full
remote) and `free` frees again.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.kit.wait import wait_until
from tests.testbed import TestbedError
from tests.testbed.engine import docker
from tests.testbed.images import ensure_sftp_image
from tests.testbed.lifecycle import UpDown
from tests.testbed.stack import LABEL, TESTBED_DIR, down_project

REPOSITORY_PATH = "/srv/restic/repo"
BALLAST = "/srv/restic/ballast"


class SftpServer(UpDown):
    def __init__(self, storage_mb: int | None = None) -> None:
        self.storage_mb = storage_mb
        self.project = f"tbsftp-{secrets.token_hex(4)}"
        self.container = f"{self.project}-sftp"
        self.keys = Path(tempfile.mkdtemp(prefix=f"{self.project}-"))
        self.key = self.keys / "id_ed25519"
        self.ip = ""

    def up(self) -> None:
        image = ensure_sftp_image()
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)],
                       check=True)
        shutil.copy(self.key.with_suffix(".pub"), self.keys / "authorized_keys")
        storage = (["--tmpfs", f"/srv/restic:rw,size={self.storage_mb}m,mode=0700"]
                   if self.storage_mb else [])
        docker("run", "-d", "--init", "--name", self.container, *storage,
               "--label", f"{LABEL}={self.project}",
               "-v", f"{self.keys}:/keys:ro", "-v", f"{TESTBED_DIR}:/testbed:ro", image)
        self.ip = docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}"
                         "{{end}}", self.container).strip()
        self.wait_ready()

    def down(self) -> None:
        down_project(self.project)
        shutil.rmtree(self.keys, ignore_errors=True)

    def ssh_command(self) -> str:
        """The ssh command restic's sftp backend runs (restic -o sftp.command=...)."""
        return (f"ssh -i {self.key} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
                f" -o LogLevel=ERROR -o BatchMode=yes -o ConnectTimeout=5"
                f" -o ServerAliveInterval=2 -o ServerAliveCountMax=2 root@{self.ip} -s sftp")

    @property
    def repository(self) -> str:
        return f"sftp:root@{self.ip}:{REPOSITORY_PATH}"

    def wait_ready(self, timeout: float = 30) -> None:
        argv = self.ssh_command().replace(" -s sftp", " true").split()
        try:
            wait_until(lambda: subprocess.run(argv, capture_output=True,
                                              check=False).returncode == 0,
                       timeout, interval=0.3, what=f"ssh into {self.container}")
        except TimeoutError as error:
            raise TestbedError(f"{error}: docker logs {self.container}") from error

    def stop(self) -> None:
        docker("stop", "-t", "2", self.container)

    def start(self) -> None:
        docker("start", self.container)
        self.wait_ready()

    def pause(self) -> None:
        docker("pause", self.container)

    def unpause(self) -> None:
        docker("unpause", self.container)

    def fill(self) -> None:
        """Write a ballast file until the repository's filesystem is full (dd fails then)."""
        docker("exec", self.container, "sh", "-c",
               f"dd if=/dev/zero of={BALLAST} bs=64k 2>/dev/null; test -s {BALLAST}")

    def free(self) -> None:
        docker("exec", self.container, "rm", "-f", BALLAST)
