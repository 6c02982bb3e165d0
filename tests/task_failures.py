"""Failures that a test's tasks are meant to raise in pynenc's runner threads.

pynenc's ThreadRunner runs each invocation in a thread whose target re-raises the
task's exception after storing it, so a task that fails on purpose also ends its
thread with an unhandled exception. The suite turns every unhandled thread exception
into an error (pyproject.toml); :func:`expected_task_failures` lets through exactly the
failures a scenario causes, counted per task and exception type, and nothing else.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import CodeType, TracebackType
from typing import Any

from tests.waiting import wait_until

Key = tuple[CodeType | None, type[BaseException]]


def _innermost_code(tb: TracebackType | None) -> CodeType | None:
    code = None
    while tb is not None:
        code = tb.tb_frame.f_code
        tb = tb.tb_next
    return code


@contextmanager
def expected_task_failures(
    expected: Mapping[tuple[Any, type[BaseException]], int],
) -> Iterator[None]:
    """Let through exactly ``expected`` runner-thread failures, and check they all happened.

    :param expected: ``{(task, ExceptionType): count}``; a failure matches when the
        task's own function raised an exception of exactly that type. Any other
        unhandled thread exception, or one more than counted, goes to pytest's hook and
        fails the test.
    :raises AssertionError: on leaving, when an expected failure never arrived.
    """
    wanted: Counter[Key] = Counter(
        {(task.func.__code__, exc_type): count for (task, exc_type), count in expected.items()}
    )
    seen: Counter[Key] = Counter()
    lock = threading.Lock()
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        key = (_innermost_code(args.exc_traceback), args.exc_type)
        with lock:
            if seen[key] < wanted[key]:
                seen[key] += 1
                return
        previous(args)

    def describe() -> str:
        names = {key: f"{key[0].co_name if key[0] else '?'}: {key[1].__name__}" for key in wanted}
        return "expected runner-thread failures " + ", ".join(
            f"{names[key]} {seen[key]} of {count}" for key, count in wanted.items()
        )

    threading.excepthook = hook
    try:
        yield
        # A runner thread reports its exception after the invocation's result is stored,
        # so the caller may see the failure before the thread has finished.
        wait_until(lambda: seen == wanted, describe)
    finally:
        threading.excepthook = previous
