"""A small LIFO pool of raw psycopg connections for the hot path.

Each state-backend call is one short statement, so the pool's own cost is paid
once per round trip. This pool keeps SQLAlchemy's rules (``pool_size`` connections
kept, up to ``max_overflow`` more under load, waiting at most ``pool_timeout`` for a
free one) with a list as the idle stack: taking and returning an idle connection are
single atomic list operations, and the lock is only taken to open, close or wait for a
connection. Last in, first out: a thread that calls alone keeps using the same server
session, whose caches are warm. (psycopg_pool was measured in its place and cost more
than the 3 % of the workload allowed for it: docs/benchmarks.md.)

On top of that it checks what a call must not meet:

- a connection that the server closed while it sat in the pool (``idle_session_timeout``,
  a restart, a pooler or firewall closing idle sessions) is recognised at checkout
  without a round trip, and :class:`NothingSentError` tells the caller to retry at once
  on a fresh connection;
- a connection older than ``max_lifetime`` is closed when it comes back, one idle for
  longer than ``max_idle`` is closed instead of handed out, and ``check`` adds a round
  trip at checkout.
"""

from __future__ import annotations

import random
import select
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.pq import ConnStatus, TransactionStatus

from pynenc_postgres.db import telemetry

Connection = psycopg.Connection[Any]

_IDLE = TransactionStatus.IDLE
_BAD = ConnStatus.BAD

# Messages an idle connection may hold before the server's goodbye (notices, parameter
# changes): enough reads to reach the end of file that follows them.
_MAX_IDLE_READS = 8


def _readable_probe(fd: int) -> Callable[[int], object]:
    """A function of a timeout (0: do not block), truthy when ``fd`` has something to read."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return poller.poll
    return lambda timeout: select.select([fd], [], [], timeout)[0]  # Windows: no poll()


class NothingSentError(psycopg.OperationalError):
    """The pool could not hand out a usable connection, and nothing was sent to the server.

    Raised at checkout for a connection the server had closed (the pool is then closed:
    its other idle connections are likely closed too). The call can be retried at once
    on a fresh connection; if that keeps failing, it is an ordinary lost connection (no
    SQLSTATE).
    """


class PoolTimeoutError(TimeoutError):
    """No connection became free within ``pool_timeout``."""


class PooledConnection(psycopg.Connection[Any]):
    """A psycopg connection with one reusable cursor and a cheap check for a closed session.

    Creating a cursor per statement costs as much CPU as adapting its parameters;
    a pooled connection serves one thread at a time, so one cursor is enough.
    """

    _hot_cursor: psycopg.Cursor[Any] | None = None
    _readable: Callable[[int], object] | None = None
    _expires_at: float = float("inf")  # monotonic time after which it is not reused
    _idle_since: float = 0.0  # monotonic time it was last returned to the pool

    @property
    def hot_cursor(self) -> psycopg.Cursor[Any]:
        """The connection's reusable cursor (results are read before the next statement)."""
        cur = self._hot_cursor
        if cur is None:
            cur = self._hot_cursor = self.cursor()
        return cur

    def closed_by_server(self) -> bool:
        """True when the server has ended this idle session; costs one ``poll``, no round trip.

        An idle session has nothing to read unless the server sent something: usually its
        goodbye (a FATAL error such as ``57P05`` idle-session timeout or ``57P01``
        terminated, then end of file). libpq reads what arrived and says whether the
        connection survived it (a notice or a parameter change leaves it usable).
        """
        readable = self._readable
        if readable is None:
            if self.closed:
                return True
            readable = self._readable = _readable_probe(self.pgconn.socket)
        if not readable(0):
            return False
        pgconn = self.pgconn
        for _ in range(_MAX_IDLE_READS):
            if self.closed or pgconn.status == _BAD:
                return True
            try:
                pgconn.consume_input()
            except psycopg.OperationalError:
                return True
            if not readable(0):
                break
        return pgconn.status == _BAD

    def answers(self) -> bool:
        """True when an empty statement makes the round trip (``pool_check``)."""
        try:
            self.execute("")
        except psycopg.Error:
            return False
        return True


class ConnectionPool:
    """LIFO pool of autocommit psycopg connections, for one process.

    Connections are opened by the thread that needs one, so a connection error (refused,
    wrong password, no free slot) is that caller's own error, at once.

    :param connect: opens a new connection.
    :param size: connections kept open when idle.
    :param overflow: connections allowed above ``size`` while all are busy; closed
        when returned.
    :param timeout: seconds to wait for a free connection before :class:`PoolTimeoutError`.
    :param max_lifetime: seconds after which a connection is closed when returned.
    :param max_idle: seconds a connection may sit in the pool before it is closed
        instead of handed out.
    :param check: make a round trip on each checkout of a connection that sat in the
        pool, besides the free check for a session the server closed.
    """

    def __init__(
        self,
        connect: Callable[[], PooledConnection],
        size: int,
        overflow: int,
        timeout: float,
        *,
        max_lifetime: float = 3600.0,
        max_idle: float = 600.0,
        check: bool = False,
    ) -> None:
        self._connect = connect
        self._size = size
        self._capacity = size + max(overflow, 0)
        self._timeout = timeout
        self._max_lifetime = max_lifetime
        self._max_idle = max_idle
        self._check = check
        self._idle: list[PooledConnection] = []
        self._open = 0  # connections counted against capacity (idle + in use)
        self._waiting = 0
        self.closed = False
        self._cond = threading.Condition(threading.Lock())

    def get(self) -> PooledConnection:
        """A live connection for the calling thread; return it with :meth:`put` or :meth:`discard`.

        :raises NothingSentError: the connection found was closed by the server (this
            pool is then closed), or the pool was closed by another thread.
        :raises PoolTimeoutError: no connection became free within the timeout.
        """
        while True:
            try:
                conn = self._idle.pop()
            except IndexError:
                waited = self._get_slow()
                if waited is None:
                    return self._open_new()
                conn = waited
            if time.monotonic() - conn._idle_since > self._max_idle:
                # Close it before a server or firewall idle timeout does, mid-call.
                self.discard(conn)
                continue
            if conn.closed_by_server() or (self._check and not conn.answers()):
                # A server that closed one idle session has usually closed them all
                # (restart, idle timeout): start again with a new pool.
                self.close()
                self.discard(conn)
                raise NothingSentError("the server had closed the pooled connection")
            return conn

    def put(self, conn: PooledConnection) -> None:
        """Return a healthy connection; one left in a transaction, broken or too old is closed."""
        now = time.monotonic()
        # A closed or broken connection reports UNKNOWN, not IDLE.
        if (
            self.closed
            or conn.pgconn.transaction_status != _IDLE
            or len(self._idle) >= self._size
            or now >= conn._expires_at
        ):
            self.discard(conn)
            return
        conn._idle_since = now
        self._idle.append(conn)
        if self.closed:  # closed meanwhile by another thread: nobody else will close it
            self.close()
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
            self.closed = True
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._cond.notify_all()
        for conn in idle:
            conn.close()

    def forget(self) -> None:
        """Drop every connection without closing it: after ``fork`` they are the parent's."""
        self.closed = True
        self._idle = []

    def stats(self) -> dict[str, int]:
        """Counts for monitoring, named as psycopg_pool names them."""
        return {
            "pool_min": self._size,
            "pool_max": self._capacity,
            "pool_size": self._open,
            "pool_available": len(self._idle),
            "requests_waiting": self._waiting,
        }

    @property
    def max_size(self) -> int:
        """Connections this pool may have open at once."""
        return self._capacity

    def _get_slow(self) -> PooledConnection | None:
        """An idle connection, or None once a slot to open a new one is reserved."""
        started = time.monotonic()
        deadline = started + self._timeout
        waited = False
        with self._cond:
            self._waiting += 1
            try:
                while True:
                    if self.closed:
                        raise NothingSentError("the connection pool was closed")
                    if self._idle:
                        return self._idle.pop()
                    if self._open < self._capacity:
                        self._open += 1
                        return None
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        telemetry.pool_timed_out()
                        raise PoolTimeoutError(
                            f"all {self._capacity} pooled connections stayed busy for "
                            f"{self._timeout}s"
                        )
                    # Short slices: a wake-up lost to a race costs at most one slice.
                    waited = True
                    self._cond.wait(min(remaining, 0.05))
            finally:
                self._waiting -= 1
                if waited:
                    telemetry.pool_waited(time.monotonic() - started)

    def _open_new(self) -> PooledConnection:
        """Open a connection in the slot that :meth:`_get_slow` reserved."""
        try:
            conn = self._connect()
        except BaseException:
            with self._cond:
                self._open -= 1
                self._cond.notify()
            raise
        # Spread the replacements of connections opened together over 5 % of the lifetime.
        conn._expires_at = time.monotonic() + self._max_lifetime * (1 - random.random() / 20)
        return conn
