"""Unhandled thread exceptions that pynenc's own suites cause, let through by origin.

Every unhandled exception in a thread fails the test (pyproject.toml). pynenc's suites,
which run here unmodified, leave some in pynenc's own threads: their tasks fail on
purpose and pynenc's ThreadRunner re-raises a task's exception in its worker thread;
MultiThreadRunner's stop iterates its workers while they finish; and the suites delete
an app's SQLite data in teardown while its runner threads are still stopping, which
pynenc's SQLite components then report from those threads. The same suites on pynenc's
own memory and SQLite stacks raise the same exceptions.

So an exception is let through when its innermost frame is in those parts of pynenc (its
runners, its SQLite components) or in pynenc's test tasks; when it is this test's
database, dropped by the fixture under a thread that pynenc's test left running; or when
a runner that pynenc's test stopped without waiting for it finishes an invocation, or
marks it killed, after the test purged it (the ``KeyError`` of a missing invocation,
which pynenc's SQLite orchestrator raises there too).
Anything raised in this plugin's code, or in a driver, still fails the test. The filters
are added when this directory is collected and stay for the session, since a thread can
report after its test has ended.

The patterns match pytest's warning text (the thread's traceback, innermost frame last).
The filter syntax splits on colons, so ``.`` stands for ``:`` and groups capture.
"""

from __future__ import annotations

import importlib.util

import pytest

# pynmon (pynenc[monitor]) supports Python < 3.13 only; without it there is no pynmon suite.
collect_ignore = [] if importlib.util.find_spec("pynmon") else ["pynmon"]

# The innermost frame is the last "File" line: only its source line and ^~~ markers, then
# the exception line, then pytest's tracemalloc note.
_INNERMOST = r"\", line \d+, in [\w<>]+\n((?!  File )[^\n]*\n){1,4}\n?Enable tracemalloc"

PYNENC_THREAD_FAILURES = {
    "raised in pynenc's runners or SQLite components, or pynenc's test tasks": (
        r"(?s)Exception in thread .*File \"[^\"]*/site-packages/"
        r"(pynenc/runner/\w+|pynenc/\w+/sqlite_\w+|pynenc_tests/[\w/]+)\.py" + _INNERMOST
    ),
    "the test's database dropped under a thread that pynenc's test left running": (
        r"(?s)Exception in thread .*(pynenc/invocation/dist_invocation\.py|"
        r"/site-packages/pynenc/runner/|/site-packages/pynenc_tests/).*"
        r"PostgresDatabaseNotFoundError. The database named in \S+/pynenc_test_\w+\S* "
        r"does not exist"
    ),
    "an invocation the test purged, finished or marked killed by a runner that pynenc's "
    "test stopped without waiting for it": (
        r"(?s)Exception in thread .*/site-packages/pynenc/(runner/base_runner\.py\", line \d+, "
        r"in _kill_and_reroute|invocation/dist_invocation\.py\", line \d+, in run)\n"
        r".*KeyError. 'Invocation ID \S+ not found'"
    ),
}


def pytest_configure(config: pytest.Config) -> None:
    for pattern in PYNENC_THREAD_FAILURES.values():
        config.addinivalue_line(
            "filterwarnings", f"ignore:{pattern}:pytest.PytestUnhandledThreadExceptionWarning"
        )


# pynenc's own defects, shown to fail the same way on pynenc's own stacks (the evidence
# and the commands to reproduce them are in docs/compatibility.md). Those that fail fast
# stay strict: the day pynenc fixes one, the run fails until its entry is removed.
def pynenc_own_failures() -> dict[str, pytest.MarkDecorator]:
    from pynenc.exceptions import InvocationNotFoundError

    return {
        "test_unit_trigger.py::test_report_task_status[": pytest.mark.xfail(
            raises=InvocationNotFoundError,
            strict=True,
            reason=(
                "pynenc's unit.trigger all_tests hands this test another module's `trigger` "
                "fixture, which does not bind `add` to the app under test; it fails the same "
                "way on pynenc's memory and SQLite stacks (docs/compatibility.md). "
                "test_unit_trigger_report_status.py runs it with its own fixture, and it passes."
            ),
        ),
        # Not run: its runner dies at start, and the test then waits for its own 90 s
        # timeout, on pynenc's SQLite stack as here.
        "test_integration_pynmon.py::test_complex_timeline": pytest.mark.xfail(
            run=False,
            reason=(
                "pynenc's test starts two runners of one app at once, and pynenc's "
                "register_deferred_triggers, which both call, iterates the app's pending "
                "triggers while the other clears them: one runner dies with 'dictionary "
                "changed size during iteration' and the test hangs until its 90 s timeout, "
                "on pynenc's SQLite stack too (docs/compatibility.md)."
            ),
        ),
    }


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    failures = pynenc_own_failures()
    for item in items:
        for node, mark in failures.items():
            if node in item.nodeid:
                item.add_marker(mark)
