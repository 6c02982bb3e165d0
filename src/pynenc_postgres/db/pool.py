"""The hot path's connections: psycopg's own pool, and the checks a call needs on top of it.

``psycopg_pool.ConnectionPool`` keeps ``min_size`` connections open, grows to ``max_size``
under load, serves waiting threads in order as connections come back, retires
connections after ``max_lifetime``, closes surplus ones after ``max_idle`` and reports
``get_stats()``. This module adds three things to it:

- the first connection of a pool is opened by the thread that needs it, so a wrong
  password or a refused port is that thread's own error, at once, and not a pool timeout
  after ``pool_timeout`` while psycopg's workers retry in the background;
- a connection that the server closed while it sat in the pool (``idle_session_timeout``,
  a restart, a pooler or firewall closing idle sessions) is recognised at checkout
  without a round trip: the checkout raises :class:`NothingSentError` instead of handing
  it out, so the call is retried at once on a fresh connection and never fails for it;
- each connection keeps one reusable cursor for the single statements of the hot path.
"""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Callable
from typing import Any, Self

import psycopg
import psycopg_pool
from psycopg.pq import ConnStatus

_BAD = ConnStatus.BAD

# The keyword that carries a pool's _Link through psycopg_pool to PooledConnection.connect.
_LINK = "_pynenc_pool_link"

# Messages an idle connection may hold before the server's goodbye (notices, parameter
# changes): enough reads to reach the end of file that follows them.
_MAX_IDLE_READS = 8

# Seconds a new pool waits for a worker to take the connection its creator opened.
_HANDOVER_WAIT = 1.0


def _readable_probe(fd: int) -> Callable[[int], object]:
    """A function of a timeout (0: do not block), truthy when ``fd`` has something to read."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return poller.poll
    return lambda timeout: select.select([fd], [], [], timeout)[0]  # Windows: no poll()


class NothingSentError(psycopg.OperationalError):
    """The pool could not hand out a usable connection, and nothing was sent to the server.

    Raised at checkout for a connection the server had closed, and for a pool closed by
    another thread after a lost connection. The call can be retried at once on a fresh
    connection; if that keeps failing, it is an ordinary lost connection (no SQLSTATE).
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

    @classmethod
    def connect(cls, conninfo: str = "", **kwargs: Any) -> Self:
        """Open a connection; a pool's worker first takes the connection handed over to it.

        psycopg_pool opens its connections by calling this method in its worker threads,
        with the ``kwargs`` the pool was given; the pool's :class:`_Link` travels among
        them and is removed before psycopg sees them.
        """
        link: _Link | None = kwargs.pop(_LINK, None)
        if link is None:
            return super().connect(conninfo, **kwargs)
        first = link.take_first()
        if isinstance(first, cls):
            return first
        try:
            return super().connect(conninfo, **kwargs)
        except Exception as exc:
            link.failure = (time.monotonic(), exc)
            raise

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


class _Link:
    """What a pool's worker threads share with the threads that use the pool."""

    __slots__ = ("_first", "failure", "taken")

    def __init__(self, first: PooledConnection) -> None:
        # list.pop() is atomic: only one worker can take the handed-over connection.
        self._first = [first]
        self.taken = threading.Event()
        self.failure: tuple[float, Exception] | None = None  # (when, error) of the last connect

    def take_first(self) -> PooledConnection | None:
        try:
            first = self._first.pop()
        except IndexError:
            return None
        self.taken.set()
        return first


class ConnectionPool:
    """Autocommit connections for one process, served by ``psycopg_pool.ConnectionPool``.

    The first connection is opened here, in the calling thread, and handed to the pool;
    psycopg's workers open the others in the background.

    :param conninfo: libpq URL or connection string.
    :param connect_kwargs: psycopg connection arguments (``autocommit``, options ...).
    :param size: connections kept open (``min_size``).
    :param overflow: connections allowed above ``size`` under load (``max_size - min_size``);
        psycopg closes them after ``max_idle`` seconds unused.
    :param timeout: seconds to wait for a free connection before :class:`PoolTimeoutError`.
    :param max_lifetime: seconds after which a connection is replaced when returned.
    :param max_idle: seconds a connection above ``size`` may stay unused before it is closed.
    :param check: make a round trip on each checkout, besides the free check for a
        session the server closed.
    :param name: the pool's name in psycopg's logs and its worker threads' names.
    """

    def __init__(
        self,
        conninfo: str,
        connect_kwargs: dict[str, Any],
        *,
        size: int,
        overflow: int,
        timeout: float,
        max_lifetime: float,
        max_idle: float,
        check: bool = False,
        name: str = "pynenc-postgres",
    ) -> None:
        first = PooledConnection.connect(conninfo, **connect_kwargs)
        self._link = _Link(first)
        self._check = check
        self._timeout = timeout
        self.closed = False
        self._pool: psycopg_pool.ConnectionPool[PooledConnection]
        try:
            self._pool = psycopg_pool.ConnectionPool(
                conninfo,
                connection_class=PooledConnection,
                kwargs={**connect_kwargs, _LINK: self._link},
                min_size=size,
                max_size=size + max(overflow, 0),
                # psycopg_pool refuses every checkout when the timeout is 0.
                timeout=max(timeout, 0.001),
                max_lifetime=max_lifetime,
                max_idle=max_idle,
                open=True,
                name=name,
            )
        except BaseException:
            first.close()
            raise
        # A checkout that finds the pool empty makes psycopg open one more connection than
        # min_size: give a worker the moment it needs to put the first one in the pool.
        self._link.taken.wait(_HANDOVER_WAIT)

    def get(self) -> PooledConnection:
        """A live connection for the calling thread; return it with :meth:`put` or :meth:`discard`.

        :raises NothingSentError: the connection found was closed by the server (this
            pool is then closed), or the pool was closed by another thread.
        :raises PoolTimeoutError: no connection became free within the timeout.
        """
        try:
            conn = self._pool.getconn()
        except psycopg_pool.PoolTimeout:
            raise self._no_connection() from None
        except psycopg_pool.PoolClosed:
            raise NothingSentError(
                "the connection pool was closed after a lost connection"
            ) from None
        except BaseException as exc:
            if not isinstance(exc, Exception):
                # psycopg_pool keeps the place in line of a thread whose wait an interrupt
                # (KeyboardInterrupt, SystemExit) ended, and would hand the next returned
                # connection to nobody. Closing the pool clears the line; the next call
                # opens a new one.
                self.close()
            raise
        if conn.closed_by_server() or (self._check and not conn.answers()):
            # A server that closed one idle session has usually closed them all
            # (restart, idle timeout): start again with a pool whose first
            # connection is opened by the caller, so an outage is its error at once.
            self.close()
            self.discard(conn)
            raise NothingSentError("the server had closed the pooled connection")
        return conn

    def _no_connection(self) -> Exception:
        """The error of a checkout that timed out: the pool's connect error, if it had one.

        When psycopg's workers failed to open the connection this caller waited for, the
        cause is that failure (server gone, out of slots), not a busy pool.
        """
        failure = self._link.failure
        if failure is not None and failure[0] >= time.monotonic() - self._timeout - 1:
            self.close()  # the next call opens a new pool and meets the error itself
            return failure[1]
        return PoolTimeoutError(
            f"no pooled connection became free within {self._timeout}s "
            f"(pool of {self._pool.max_size})"
        )

    def put(self, conn: PooledConnection) -> None:
        """Return ``conn`` to this pool (closed instead if the pool was closed meanwhile)."""
        self._pool.putconn(conn)

    def discard(self, conn: PooledConnection) -> None:
        """Close ``conn`` and give its slot back; the pool opens a replacement if it needs one."""
        try:
            conn.close()
        finally:
            self._pool.putconn(conn)

    def close(self) -> None:
        """Close the idle connections and stop psycopg's workers; busy ones close when returned."""
        self.closed = True
        self._pool.close()
        first = self._link.take_first()
        if first is not None:
            first.close()

    def forget(self) -> None:
        """Drop every connection and thread without touching them: after ``fork`` they are
        the parent's.

        The child's copy of psycopg's pool has no worker threads, and its sockets are the
        parent's. Marked closed, it neither signals the parent's workers nor closes the
        parent's connections when it is garbage collected (psycopg's connections do not
        close a socket from a process other than their own).
        """
        self.closed = True
        self._pool._closed = True

    def stats(self) -> dict[str, int]:
        """psycopg_pool's counters and measures (``pool_size``, ``pool_available``, ...)."""
        return self._pool.get_stats()

    @property
    def max_size(self) -> int:
        """Connections this pool may have open at once."""
        return self._pool.max_size
