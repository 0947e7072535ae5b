"""Registers the test bed's fixtures (engine, images, stacks, VM) for every test tier."""

pytest_plugins = ["tests.testbed.fixtures"]
