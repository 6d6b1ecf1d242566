"""Waiting for something another thread or process does: poll until a deadline, never
sleep a guessed time and then assert (STYLE.md rule 15). A loaded machine makes the wait
longer, not the test red; a broken promise still fails once the deadline has passed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
INTERVAL = 0.02  # seconds between two looks


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, message: str = "") -> T:
    """The first truthy value of `predicate()`; AssertionError once `timeout` seconds passed.
    The last look starts after the deadline, so a promise kept just in time still passes."""
    deadline = time.monotonic() + timeout
    while True:
        expired = time.monotonic() >= deadline
        value = predicate()
        if value:
            return value
        if expired:
            raise AssertionError(f"not within {timeout} s: {message or predicate}")
        time.sleep(INTERVAL)


async def wait_until_async(
    predicate: Callable[[], T], timeout: float = 10.0, message: str = ""
) -> T:
    """`wait_until` for a test on the event loop, where the awaited work runs too."""
    deadline = time.monotonic() + timeout
    while True:
        expired = time.monotonic() >= deadline
        value = predicate()
        if value:
            return value
        if expired:
            raise AssertionError(f"not within {timeout} s: {message or predicate}")
        await asyncio.sleep(INTERVAL)
