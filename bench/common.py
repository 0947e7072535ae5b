"""What the benchmark scripts share: their command line and where their tables go."""

from __future__ import annotations

import argparse
from pathlib import Path


def arguments(doc: str | None, *, rows: int = 5_000_000, repeat: int | None = 3
              ) -> argparse.ArgumentParser:
    """--rows, --repeat (unless None), --dir and --out; the script adds its own."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    parser.add_argument("--rows", type=int, default=rows)
    if repeat is not None:
        parser.add_argument("--repeat", type=int, default=repeat)
    parser.add_argument("--dir", type=Path, help="work directory (default: a temporary one)")
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    return parser


def publish(text: str, out: Path | None) -> None:
    """Print the result and, with --out, write it there too."""
    print(text)
    if out:
        out.write_text(text if text.endswith("\n") else text + "\n")
