#!/bin/sh
# Tracker stand-in entrypoint (run with `docker run --init`). Like torrust/tracker's own
# entrypoint: hand the data, config and log trees to uid/gid 1000 with setgid 2770
# directories, then run the workload unprivileged. Arguments go to writer.py.
set -eu
for tree in /var/lib/torrust/tracker /etc/torrust/tracker /var/log/torrust/tracker; do
    mkdir -p "$tree"
    chown -R 1000:1000 "$tree"
    find "$tree" -type d -exec chmod 2770 {} +
done
exec setpriv --reuid=1000 --regid=1000 --clear-groups \
    python3 -u /testbed/writer.py "$@"
