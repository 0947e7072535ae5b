#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine (as root): installs what the tests
# need, then runs lint, type checks and every test (unit, integration, and end-to-end on
# the Docker test bed, which starts its own dockerd if none runs).
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
# Debian packages: the run-time dependencies, the test bed's tools, the package tool chain.
packages=(
    python3 python3-venv python3-pip python3-systemd python3-pymysql python3-tomli-w
    python3-zstandard python3-pytest python3-prometheus-client zstd sqlite3
    docker.io mmdebstrap restic openssh-client
    debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools
    lintian systemd man-db
)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" \
        || missing+=("$package")
done
if ((${#missing[@]})); then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# nox drives the sessions; it lives in its own venv so the host's Pythons stay untouched.
if [ ! -x /opt/trackerbackup-dev/bin/nox ]; then
    /usr/bin/python3 -m venv /opt/trackerbackup-dev
    /opt/trackerbackup-dev/bin/pip install -q nox
fi
exec /opt/trackerbackup-dev/bin/nox -s lint typecheck tests "$@"
