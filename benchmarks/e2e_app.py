"""The app and tasks of the end-to-end benchmark (``benchmarks/e2e.py``).

Built from ``PYNENC__*`` environment variables alone, so the runner process and the
workers it spawns select the stack being measured by name, as a deployment would.
"""

from __future__ import annotations

import time

from pynenc import Pynenc

app = Pynenc()


@app.task  # type: ignore[untyped-decorator]  # pynenc ships no type information
def tiny(x: int) -> int:
    """The smallest useful task: the measured cost is pynenc's and the stack's."""
    return x


@app.task  # type: ignore[untyped-decorator]
def started_at() -> float:
    """When the task body began, by this machine's clock (the client is on the same host)."""
    return time.time()
