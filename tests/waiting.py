"""Waiting in tests: poll a condition until it holds, or fail with a message at a deadline.

A test that waits for another thread, process or the server must never end only at
pytest's timeout: the deadline names what did not happen. Deadlines are generous (a
loaded machine is slow); reaching one is a failure, not a measurement.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

DEFAULT_TIMEOUT = 60.0


def wait_until[T](
    predicate: Callable[[], T],
    message: str | Callable[[], str],
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.02,
) -> T:
    """Call ``predicate`` until it returns something true, and return that.

    :param predicate: checked at once, then every ``interval`` seconds.
    :param message: what was awaited (or a callable building it, to show the last
        state); the AssertionError raised at the deadline starts with it.
    :param timeout: seconds before giving up.
    :raises AssertionError: the predicate stayed false for ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"{text} (still not the case after {timeout:g} s)")
        time.sleep(interval)


def blocked_in_wait(thread: threading.Thread) -> bool:
    """True while ``thread`` sits in ``threading``'s ``wait`` (a condition or an event).

    A test that needs another thread to be waiting (for a pooled connection, say)
    polls this instead of sleeping and hoping.
    """
    frame = sys._current_frames().get(thread.ident or -1)
    return (
        frame is not None
        and frame.f_code.co_name == "wait"
        and frame.f_code.co_filename == threading.__file__
    )
