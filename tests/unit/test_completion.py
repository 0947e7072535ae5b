"""The bash completion offers exactly the sub-commands the parser has."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from trackerbackup.cli import build_parser

COMPLETION = Path(__file__).parents[2] / "debian/completions/trackerbackup"


def test_the_completion_lists_every_sub_command() -> None:
    [listed] = re.findall(r'local commands="([^"]*)"', COMPLETION.read_text())
    [subparsers] = [a for a in build_parser()._actions
                    if isinstance(a, argparse._SubParsersAction)]

    assert set(listed.split()) == set(subparsers.choices)
