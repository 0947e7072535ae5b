#!/bin/bash
# trackerbackup demo on the test bed. Run as root on a fresh Debian 12 machine, from the
# checkout root:
#     bash tests/testbed/demo.sh          # install, bring up the stack, run backups, list
#     bash tests/testbed/demo.sh down     # remove containers, network, /tmp/trackerbackup-demo
#
# The stack is shaped like a real Torrust host (project "torrust", containers "tracker" and,
# with DEMO_FLAVOUR=mysql, "mysql") under $DEMO_ROOT/opt/torrust, with a tracker-like writer
# committing every ~5 ms while the backups run.
set -euo pipefail

# Backup types to run, in order (the lead extends this list as types land).
BACKUP_TYPES=(selective database)
DEMO_ROOT=${DEMO_ROOT:-/tmp/trackerbackup-demo}
DEMO_FLAVOUR=${DEMO_FLAVOUR:-sqlite}
DEMO_ROWS=${DEMO_ROWS:-20000}
PROJECT=torrust
PY=/usr/bin/python3   # Debian's python3 (python3-systemd etc.), not a pyenv one on PATH
PACKAGES=(docker.io mmdebstrap python3 python3-pytest python3-systemd python3-pymysql
          python3-tomli-w python3-zstandard zstd sqlite3 ca-certificates)

cd "$(dirname "$0")/../.."
if [[ ! -f tests/testbed/stack.py || ! -d trackerbackup ]]; then
    echo "demo.sh: run it from a trackerbackup checkout (tests/testbed/stack.py not found)" >&2
    exit 2
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "demo.sh: run as root (it starts dockerd and builds images)" >&2
    exit 2
fi
testbed() { "$PY" -m tests.testbed --root "$DEMO_ROOT" --project "$PROJECT" "$@"; }

if [[ ${1:-up} == down ]]; then
    testbed down
    exit 0
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "== installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y "${missing[@]}"
fi

echo "== bringing up the $DEMO_FLAVOUR stack under $DEMO_ROOT (first run builds images, ~1 min)"
testbed up --flavour "$DEMO_FLAVOUR" --rows "$DEMO_ROWS" --name-prefix ""
CONFIG="$DEMO_ROOT/trackerbackup.toml"
tb() {
    echo "+ $PY -m trackerbackup --config $CONFIG $*"
    "$PY" -m trackerbackup --config "$CONFIG" "$@"
}

failed=()
for type in "${BACKUP_TYPES[@]}"; do
    echo
    echo "== backup: $type (the writer keeps committing)"
    if ! tb run "$type"; then
        failed+=("$type")
        echo "!! backup type '$type' failed (see the message above)"
    fi
done
echo
echo "== backups"
tb list || failed+=(list)
latest_db=$(ls -1d "$DEMO_ROOT"/backups/database/2*/tracker.db.zst 2>/dev/null | tail -n 1 || true)
if [[ -n $latest_db ]]; then
    echo
    echo "== is the newest database backup the database after an exact prefix of the commits?"
    testbed check-prefix "$latest_db" || failed+=(check-prefix)
fi
echo
echo "== verify: every stored backup end to end (sha256, decompression, integrity_check)"
tb verify || failed+=(verify)
echo
echo "== restore: what an in-place restore would do, then a real one into a directory"
tb restore database --latest --dry-run || failed+=(restore-dry-run)
tb restore database --latest --target "$DEMO_ROOT/restored" || failed+=(restore)
echo
echo "== writer status (failed must be 0: no write lost during the backups)"
testbed status

cat <<EOT

== look around
  tree:       ls -la $DEMO_ROOT/opt/torrust/storage
  backups:    find $DEMO_ROOT/backups -maxdepth 3
  config:     cat $CONFIG
  containers: /usr/bin/docker ps --filter label=com.docker.compose.project=$PROJECT
  writer:     /usr/bin/docker logs tracker; tail $DEMO_ROOT/opt/torrust/storage/tracker/log/testbed-oplog.tsv
  again:      $PY -m trackerbackup --config $CONFIG run selective
  restored:   sqlite3 $DEMO_ROOT/restored/tracker.db 'SELECT count(*) FROM torrents' 
== tear down
  bash tests/testbed/demo.sh down
EOT

if ((${#failed[@]})); then
    echo "demo.sh: failed: ${failed[*]}" >&2
    exit 1
fi
