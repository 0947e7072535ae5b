"""Registers the test kit's fixtures for every tier. They start nothing: the Docker test
bed's fixtures are registered only by the tier that uses them (tests/e2e/conftest.py)."""

pytest_plugins = ["tests.kit.fixtures"]
