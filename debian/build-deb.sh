#!/bin/sh
# Build the source and binary packages from a temporary copy of the source tree, so the
# checkout is never dirtied by debian/trackerbackup/, .pybuild/ or build stamps.
#   debian/build-deb.sh OUTDIR
# Leaves trackerbackup_*.deb, .dsc, .tar.xz, .changes and .buildinfo (and build.log) in
# OUTDIR and prints the path of the .deb on its last line.
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
srcdir=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1"
outdir=$(cd "$1" && pwd)

work=$(mktemp -d "${TMPDIR:-/tmp}/trackerbackup-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
mkdir "$work/trackerbackup"
# Only what the package is built from: no VCS data, caches or earlier build trees.
tar -C "$srcdir" \
    --exclude=./.git --exclude=./.nox --exclude=./.venv --exclude=./.pybuild \
    --exclude=__pycache__ --exclude=.mypy_cache --exclude=.ruff_cache \
    --exclude=.pytest_cache --exclude='*.egg-info' --exclude=./build \
    --exclude=./debian/trackerbackup --exclude=./debian/.debhelper --exclude=./dist \
    -cf - . | tar -C "$work/trackerbackup" -xf -

# A pyenv or venv python first on PATH breaks pybuild: build with the system's.
(
    cd "$work/trackerbackup"
    env PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        dpkg-buildpackage -us -uc >"$work/build.log" 2>&1
) || {
    tail -n 60 "$work/build.log" >&2
    echo "$0: dpkg-buildpackage failed (last 60 lines above)" >&2
    exit 1
}
cp "$work"/trackerbackup_*.deb "$work"/trackerbackup_*.dsc "$work"/trackerbackup_*.tar.xz \
    "$work"/trackerbackup_*.changes "$work"/trackerbackup_*.buildinfo "$outdir"/
cp "$work/build.log" "$outdir/build.log"
ls "$outdir"/trackerbackup_*.deb
