"""The test kit: one copy of each helper, for every tier (unit, integration, e2e, bench/).

- `wait.wait_until(condition, timeout)`: every wait for something to become true;
- `cli.trackerbackup(config, *args)`: the checkout's command line in a new process
  (the installed one inside the test bed's VM: `tests.testbed.vm.VM.trackerbackup`);
- `pings.PingRecorder` (fixture `ping_server`): a recording healthchecks-style service;
- `local_tracker`: the test bed's writer as a local child process, a signal freezer;
- `filesystems`: the filesystem of a path (does a copy there clone?), small tmpfs mounts;
- `archives`: tar archives built member by member, snapshots of a tree;
- `fixtures`: `ping_server`, `site` (the deployer's tree and a config for it), registered
  in tests/conftest.py.

The tracker's shapes are the test bed's, for every tier too: `tests.testbed.tree` (the
deployer's tree and the tracker database), `tests.testbed.writer` (the tracker-like
writer) and `tests.testbed.prefix` (a snapshot against an exact prefix of its commits).
None of these imports Docker code.
"""
