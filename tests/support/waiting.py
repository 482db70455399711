"""Waiting for something to happen, instead of sleeping for a guessed time.

:func:`wait_until` polls a predicate until it returns something truthy and
returns that value; if ``timeout`` seconds pass first it raises
:class:`WaitTimeout` (an ``AssertionError``, so pytest reports it as a failed
check) naming what was awaited and the last value seen.

Imported by the tests and the helpers they share (pyproject's pytest
``pythonpath`` puts ``tests/`` on ``sys.path``; ``bench/harness.py`` does too, for the servers).
A sleep that *is* the behaviour under test (silence that lets an entry
expire, a job that takes its time, a measurement window) stays a
``time.sleep`` with a comment saying so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """:func:`wait_until` gave up; ``last`` is what the predicate returned the last time."""

    def __init__(self, text: str, last: object) -> None:
        super().__init__(text)
        self.last = last


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.02,
    message: str | Callable[[], str] | None = None,
) -> T:
    """Call ``predicate`` every ``interval`` s until it returns something truthy; return that.

    The predicate is called at least once, and once more at the deadline, so a
    condition that became true during the last sleep is not missed. An exception
    it raises propagates at once (use it for "this must never happen while
    waiting"). ``message`` (a string, or a callable evaluated only on timeout)
    says what was awaited.
    """
    deadline = time.monotonic() + timeout
    while True:
        last_call = time.monotonic() >= deadline
        value = predicate()
        if value:
            return value
        if last_call:
            what = message() if callable(message) else message
            what = what or getattr(predicate, "__qualname__", repr(predicate))
            raise WaitTimeout(f"not within {timeout:g} s: {what} (last value: {value!r})", value)
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
