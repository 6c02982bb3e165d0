"""The app of the fleet tests, built from ``PYNENC__*`` variables alone (runner and workers)."""

from __future__ import annotations

from pynenc import Pynenc

app = Pynenc()


@app.task  # type: ignore[untyped-decorator]  # pynenc ships no type information
def echo(n: int) -> int:
    return n
