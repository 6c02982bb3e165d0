"""A small LIFO pool of raw psycopg connections for the hot path.

Each state-backend call is one short statement, so the pool's own cost is paid
once per round trip. SQLAlchemy's ``QueuePool`` wraps every checkout in a fairy
object, a queue with a condition variable and a weak reference, which costs
about as much CPU as the statement itself. This pool keeps the same rules
(``pool_size`` connections kept, up to ``max_overflow`` more under load, waiting
at most ``pool_timeout`` for a free one) with a list as the idle stack: taking and
returning an idle connection are single atomic list operations, and the lock is
only taken to open, close or wait for a connection.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

Connection = psycopg.Connection[Any]

_IDLE = TransactionStatus.IDLE


class PooledConnection(psycopg.Connection[Any]):
    """A psycopg connection that keeps one cursor for the single statements of the hot path.

    Creating a cursor per statement costs as much CPU as adapting its parameters;
    a pooled connection serves one thread at a time, so one cursor is enough.
    """

    _hot_cursor: psycopg.Cursor[Any] | None = None

    @property
    def hot_cursor(self) -> psycopg.Cursor[Any]:
        """The connection's reusable cursor (results are read before the next statement)."""
        cur = self._hot_cursor
        if cur is None:
            cur = self._hot_cursor = self.cursor()
        return cur


class PoolTimeoutError(TimeoutError):
    """No connection became free within ``pool_timeout``."""


class ConnectionPool:
    """LIFO pool of autocommit psycopg connections, for one process.

    :param connect: opens a new connection.
    :param size: connections kept open when idle.
    :param overflow: connections allowed above ``size`` while all are busy; closed
        when returned.
    :param timeout: seconds to wait for a free connection before
        :class:`PoolTimeoutError`.
    """

    def __init__(
        self, connect: Callable[[], Connection], size: int, overflow: int, timeout: float
    ) -> None:
        self._connect = connect
        self._size = size
        self._capacity = size + max(overflow, 0)
        self._timeout = timeout
        self._idle: list[Connection] = []
        self._open = 0  # connections counted against capacity (idle + in use)
        self._waiting = 0
        self._closed = False
        self._cond = threading.Condition(threading.Lock())

    def get(self) -> Connection:
        """A connection for the calling thread; return it with :meth:`put` or :meth:`discard`."""
        try:
            return self._idle.pop()
        except IndexError:
            return self._get_slow()

    def put(self, conn: Connection) -> None:
        """Return a healthy connection; one left in a transaction or broken is closed."""
        # A closed or broken connection reports UNKNOWN, not IDLE.
        if self._closed or conn.pgconn.transaction_status != _IDLE or len(self._idle) >= self._size:
            self.discard(conn)
            return
        self._idle.append(conn)
        # A waiter registers itself before looking at the idle stack, so either it
        # sees this connection or this check sees it and wakes it.
        if self._waiting:
            with self._cond:
                self._cond.notify()

    def discard(self, conn: Connection) -> None:
        """Close ``conn`` and free its slot (after an error that may have broken it)."""
        try:
            conn.close()
        finally:
            with self._cond:
                self._open -= 1
                self._cond.notify()

    def close(self) -> None:
        """Close the idle connections; busy ones are closed when they come back."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._cond.notify_all()
        for conn in idle:
            conn.close()

    def forget(self) -> None:
        """Drop every connection without closing it: after ``fork`` they are the parent's."""
        self._closed = True
        self._idle = []

    def _get_slow(self) -> Connection:
        deadline = time.monotonic() + self._timeout
        with self._cond:
            self._waiting += 1
            try:
                while True:
                    if self._idle:
                        return self._idle.pop()
                    if self._open < self._capacity:
                        self._open += 1
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise PoolTimeoutError(
                            f"all {self._capacity} pooled connections stayed busy for "
                            f"{self._timeout}s"
                        )
                    # Short slices: a wake-up lost to a race costs at most one slice.
                    self._cond.wait(min(remaining, 0.05))
            finally:
                self._waiting -= 1
        try:
            return self._connect()
        except BaseException:
            with self._cond:
                self._open -= 1
                self._cond.notify()
            raise
