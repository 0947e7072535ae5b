"""Test bed images: one mmdebstrap root filesystem, three role images derived by tag-only builds.

Tags carry a hash of the recipe (package list, hook scripts, Dockerfiles), so a warm run finds
them and skips the build.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.testbed import TestbedError
from tests.testbed.engine import DOCKER, STATE_DIR, docker, ensure_packages

REPO = "trackerbackup-testbed"
SUITE = "bookworm"
MERGED_USR_HOOKS = "/usr/share/mmdebstrap/hooks/merged-usr"

PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "python3", "python3-systemd", "python3-pymysql",
    "python3-tomli-w", "python3-zstandard", "zstd", "mariadb-server", "mariadb-client",
    "docker.io", "ca-certificates",
)
# No `sqlite3` CLI on purpose: the real tracker image has none (python3's module is fine).

# Before the packages are installed: MariaDB's small redo log (image ~90 MB smaller) and a
# mysql user with uid/gid 999 like the official mysql image (owner of storage/mysql/data).
ESSENTIAL_HOOK = r"""
set -e
mkdir -p "$1/etc/mysql/mariadb.conf.d"
printf '[mysqld]\ninnodb_log_file_size = 16M\n' > "$1/etc/mysql/mariadb.conf.d/99-testbed.cnf"
grep -q '^mysql:' "$1/etc/group" || echo 'mysql:x:999:' >> "$1/etc/group"
grep -q '^mysql:' "$1/etc/passwd" || \
  echo 'mysql:x:999:999:MariaDB Server:/nonexistent:/bin/false' >> "$1/etc/passwd"
if [ -f "$1/etc/shadow" ]; then echo 'mysql:!:19000::::::' >> "$1/etc/shadow"; fi
"""

# After: drop docs, mask units that make no sense in a container or would start daemons in
# the VM (its docker CLI talks to the host engine; MariaDB runs in its own container).
CUSTOMIZE_HOOK = r"""
set -e
rm -rf "$1"/usr/share/doc/* "$1"/usr/share/man/* "$1"/usr/share/info/* "$1"/usr/share/lintian
rm -rf "$1"/var/lib/mysql/* "$1"/var/cache/apt/*.bin
for unit in getty@tty1.service getty.target console-getty.service serial-getty@.service \
    systemd-firstboot.service systemd-udevd.service systemd-udev-trigger.service \
    docker.service docker.socket containerd.service mariadb.service e2scrub_reap.service \
    apt-daily.timer apt-daily-upgrade.timer; do
  ln -sf /dev/null "$1/etc/systemd/system/$unit"
done
: > "$1/etc/machine-id"
"""

ROLE_DOCKERFILES: dict[str, str] = {
    # The tracker stand-in: tests/testbed is mounted read-only at /testbed.
    "tracker": 'LABEL org.trackerbackup.testbed.role="tracker"\n'
               'ENTRYPOINT ["/bin/sh", "/testbed/tracker_entrypoint.sh"]\n',
    "mysql": 'LABEL org.trackerbackup.testbed.role="mysql"\n'
             'ENTRYPOINT ["/bin/sh", "/testbed/mysql_entrypoint.sh"]\n'
             'CMD ["mariadbd"]\n',
    "vm": 'LABEL org.trackerbackup.testbed.role="vm"\n'
          "ENV container=docker\n"
          "STOPSIGNAL SIGRTMIN+3\n"
          'CMD ["/sbin/init"]\n',
}


@dataclass(frozen=True)
class Images:
    """Tags of the role images."""

    base: str
    tracker: str
    mysql: str
    vm: str
    cold_build_seconds: float | None  # None when everything came from the cache
    elapsed_seconds: float


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


def base_tag() -> str:
    recipe = _digest(SUITE, " ".join(PACKAGES), ESSENTIAL_HOOK, CUSTOMIZE_HOOK, "apt",
                     "merged-usr")
    return f"{REPO}/base:{recipe}"


def role_tag(role: str, base: str) -> str:
    return f"{REPO}/{role}:{_digest(base, ROLE_DOCKERFILES[role])}"


def image_exists(tag: str) -> bool:
    proc = subprocess.run([DOCKER, "image", "inspect", tag], capture_output=True, check=False)
    return proc.returncode == 0


def apt_sources_file() -> str:
    """The machine's own apt sources (so no mirror host name is written anywhere)."""
    candidates = sorted(glob.glob("/etc/apt/sources.list.d/*.sources"))
    if Path("/etc/apt/sources.list").is_file() and Path("/etc/apt/sources.list").stat().st_size:
        candidates.append("/etc/apt/sources.list")
    for path in candidates:
        if any(line.strip() and not line.lstrip().startswith("#")
               for line in Path(path).read_text().splitlines()):
            return path
    raise TestbedError("no apt sources found in /etc/apt/sources.list.d/*.sources or "
                       "/etc/apt/sources.list: mmdebstrap needs the machine's mirror")


def build_base(tag: str, packages: tuple[str, ...] = PACKAGES,
               essential_hook: str = ESSENTIAL_HOOK) -> None:
    """mmdebstrap the root filesystem and stream it into `docker import`."""
    ensure_packages("mmdebstrap")
    argv = [
        "mmdebstrap", "--variant=apt", "--quiet",
        "--dpkgopt=force-unsafe-io",
        f"--hook-dir={MERGED_USR_HOOKS}",
        f"--include={','.join(packages)}",
        f"--essential-hook={essential_hook}",
        f"--customize-hook={CUSTOMIZE_HOOK}",
        "--format=tar", SUITE, "-", apt_sources_file(),
    ]
    env = {**os.environ, "TMPDIR": "/dev/shm"}
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as debs:
        assert debs.stdout is not None
        imp = subprocess.run(
            [DOCKER, "import", "--message", "trackerbackup test bed base (mmdebstrap)", "-", tag],
            stdin=debs.stdout, capture_output=True, check=False,
        )
        debs.stdout.close()
        err = debs.stderr.read().decode(errors="replace") if debs.stderr else ""
        debs.wait()
    if debs.returncode != 0:
        raise TestbedError(f"mmdebstrap failed (exit {debs.returncode}); check the apt sources "
                           f"and the network to the mirror:\n{err[-3000:]}")
    if imp.returncode != 0:
        raise TestbedError(f"docker import failed (exit {imp.returncode}):\n"
                           f"{imp.stderr.decode(errors='replace')[-2000:]}")


def build_role(tag: str, base: str, role: str) -> None:
    """A tag-only build (no RUN): needs no network and takes well under a second."""
    dockerfile = f"FROM {base}\n{ROLE_DOCKERFILES[role]}"
    docker("build", "--quiet", "-t", tag, "-", input_bytes=dockerfile.encode(),
           env={"DOCKER_BUILDKIT": "0"})


def ensure_images(log: bool = True) -> Images:
    """Build what is missing (cold: ~1 min), reuse cached tags (warm: well under a second).

    Concurrent sessions wait for one another's build (a lock file) instead of building twice.
    """
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR / "images.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure_images(log)


def _ensure_images(log: bool) -> Images:
    start = time.monotonic()
    base = base_tag()
    cold: float | None = None
    if not image_exists(base):
        build_base(base)
        cold = time.monotonic() - start
    tags = {role: role_tag(role, base) for role in ROLE_DOCKERFILES}
    for role, tag in tags.items():
        if not image_exists(tag):
            build_role(tag, base, role)
    elapsed = time.monotonic() - start
    if log:
        what = f"cold build {cold:.1f} s" if cold is not None else f"warm start {elapsed:.2f} s"
        print(f"[testbed] images ready ({what}): {base}")
    return Images(base=base, tracker=tags["tracker"], mysql=tags["mysql"], vm=tags["vm"],
                  cold_build_seconds=cold, elapsed_seconds=elapsed)


# The off-site tests' sftp server: a small root filesystem of its own (openssh-server), so
# the shared base keeps its cached tag.
SFTP_PACKAGES = ("openssh-server",)
SFTP_DOCKERFILE = ('LABEL org.trackerbackup.testbed.role="sftp"\n'
                   'ENTRYPOINT ["/bin/sh", "/testbed/sftp_entrypoint.sh"]\n')


def ensure_sftp_image() -> str:
    """The sftp server image (cold: one mmdebstrap, ~30 s; warm: its cached tag)."""
    rootfs = f"{REPO}/sftp-rootfs:{_digest(SUITE, ' '.join(SFTP_PACKAGES), CUSTOMIZE_HOOK)}"
    tag = f"{REPO}/sftp:{_digest(rootfs, SFTP_DOCKERFILE)}"
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR / "images.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not image_exists(rootfs):
            build_base(rootfs, SFTP_PACKAGES, essential_hook="true")
        if not image_exists(tag):
            docker("build", "--quiet", "-t", tag, "-",
                   input_bytes=f"FROM {rootfs}\n{SFTP_DOCKERFILE}".encode(),
                   env={"DOCKER_BUILDKIT": "0"})
    return tag
