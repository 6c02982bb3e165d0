"""The app and task of the fleet benchmark (``benchmarks/fleet.py``).

Built from ``PYNENC__*`` environment variables alone, as a deployment builds it. The task
reports its start to the benchmark over a UDP datagram (``FLEET_BENCH_PORT``), so the
benchmark learns when each task ran without querying the database it is counting.
"""

from __future__ import annotations

import os
import socket
import time

from pynenc import Pynenc

PORT_ENV = "FLEET_BENCH_PORT"

app = Pynenc()
_socket: socket.socket | None = None


def _report(n: int, started: float) -> None:
    global _socket
    port = os.environ.get(PORT_ENV)
    if not port:
        return
    if _socket is None:
        _socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    _socket.sendto(f"{n} {started!r} {os.getpid()}".encode(), ("127.0.0.1", int(port)))


@app.task  # type: ignore[untyped-decorator]  # pynenc ships no type information
def ping(n: int) -> int:
    """A tiny task that tells the benchmark when it started (this host's clock)."""
    _report(n, time.time())
    return n
