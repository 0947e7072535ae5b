"""`wait_until`: the one way tests and the test bed wait for something to become true."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T | None], timeout: float, *, interval: float = 0.05,
               what: str = "") -> T:
    """Call `condition` until it returns a true value, and return that value.

    Raises TimeoutError (naming `what`, else the condition) once `timeout` seconds have
    passed. An exception raised by `condition` ends the wait at once: a condition asserts
    whatever must hold meanwhile (e.g. that the process it waits on is still alive).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            name = what or getattr(condition, "__name__", repr(condition))
            raise TimeoutError(f"{name}: not reached within {timeout:g} s")
        time.sleep(interval)
