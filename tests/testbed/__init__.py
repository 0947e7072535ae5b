"""The trackerbackup test bed: a Docker engine, cached images, a Torrust-shaped stack
(tracker stand-in with a verifiable writer, MariaDB stand-in) and a systemd "VM" container.

Entry points: `tests.testbed.fixtures` (pytest), `python3 -m tests.testbed` (demo CLI).
"""
