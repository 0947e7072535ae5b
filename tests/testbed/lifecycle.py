"""The life cycle the test bed's things share (a stack, a VM, an sftp server)."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class UpDown:
    """A context manager around `up()` and `down()`: taken down on the way out, and when
    `up()` fails half-way (so a failed start leaves no container behind)."""

    def up(self) -> object:
        raise NotImplementedError

    def down(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.down()
