"""The trackerbackup test bed: a Docker engine, cached images, a Torrust-shaped stack
(tracker stand-in with a verifiable writer, MariaDB stand-in) and a systemd "VM" container.

Entry points: `tests.testbed.fixtures` (pytest, imported by the conftest of each tier that
uses it: tests/e2e, tests/faults),
`python3 -m tests.testbed` (demo CLI). The tracker's shapes (tree.py, writer.py, prefix.py,
record.py) import no Docker code and serve the tiers without Docker too (tests/kit).
"""


class TestbedError(RuntimeError):
    """The test bed cannot be built or run; the message names the cause and the fix."""

    __test__ = False  # not a pytest test class despite the name
