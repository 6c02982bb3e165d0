"""Wake-ups for idle consumers: ``LISTEN``/``NOTIFY`` with a polling fallback.

A notification is only a hint that a table changed; the table stays the source of
truth. A consumer takes a :meth:`~Wakeups.token` for its key *before* it looks at the
table, and then waits for a notification newer than that token, so work that arrives
between its look and its wait is never slept through.

:class:`NotificationListener` keeps one dedicated connection per process and channel
(never one of the pool's: ``LISTEN`` is session state) and reads it from a daemon
thread, which reconnects and listens again after the connection drops. While it is
disconnected, waiters poll. The listener belongs to the process that created it: a
forked child drops it without touching its socket and opens its own on first use, and
it cannot be pickled.

:class:`PollingWakeups` only sleeps: the mode for transaction-mode poolers, where a
``LISTEN`` is lost as soon as the pooler hands the server connection to another client.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Protocol

import psycopg

from pynenc_postgres.db.errors import translate
from pynenc_postgres.db.settings import DatabaseSettings, libpq_url
from pynenc_postgres.db.sql import quote_ident

logger = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 7999
"""``NOTIFY`` payloads must be shorter than 8000 bytes; a longer key is sent as ``""``."""

MAX_CHANNEL_BYTES = 63
"""Channel names are identifiers: at most 63 bytes (``NAMEDATALEN - 1``)."""

# The listening connection reads notifications in slices of this many seconds, so a
# stop request is seen promptly; every KEEPALIVE_SEC it sends a query, which finds a
# connection the server or the network dropped without telling us, and keeps a server
# with idle_session_timeout from closing it (the interval shrinks below that timeout).
_READ_SLICE_SEC = 1.0
KEEPALIVE_SEC = 10.0
_IDLE_TIMEOUT_SQL = (
    "SELECT extract(epoch FROM current_setting('idle_session_timeout', true)::interval)"
)
_RECONNECT_INITIAL_DELAY = 0.1
_RECONNECT_MAX_DELAY = 5.0

Token = tuple[int, int]


class Wakeups(Protocol):
    """How a consumer waits for new work under ``key`` (an app and queue, for the broker)."""

    def token(self, key: str) -> Token:
        """Take before looking at the table; :meth:`wait` returns once a newer event came."""

    def wait(self, key: str, token: Token, timeout: float) -> bool:
        """Sleep until an event for ``key`` newer than ``token``, or ``timeout`` seconds.

        :return: False only when the whole ``timeout`` passed with the certainty that
            nothing happened (so looking at the table again would find nothing new).
        """


class PollingWakeups:
    """Wake-ups without ``LISTEN``: every wait is one poll interval.

    :param interval: seconds between two looks at the table.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval

    def token(self, key: str) -> Token:
        return (0, 0)

    def wait(self, key: str, token: Token, timeout: float) -> bool:
        time.sleep(max(0.0, min(self.interval, timeout)))
        return True


def notify_payload(key: str) -> str:
    """The payload that wakes waiters of ``key``: the key, or ``""`` (everyone) if too long."""
    return key if len(key.encode("utf-8", "surrogatepass")) <= MAX_PAYLOAD_BYTES else ""


class NotificationListener:
    """One ``LISTEN`` connection of this process on ``channel``, read by a daemon thread.

    Payloads are keys: a notification with payload ``k`` wakes the waiters of ``k``;
    an empty payload, a reconnection and a lost connection wake every waiter (a
    notification may have been missed, so everyone looks at the table again).

    :param settings: the database to listen on.
    :param channel: channel name, at most 63 bytes.
    :param poll_interval: seconds between looks at the table while disconnected.
    """

    def __init__(self, settings: DatabaseSettings, channel: str, poll_interval: float) -> None:
        if len(channel.encode()) > MAX_CHANNEL_BYTES:
            raise ValueError(f"channel name longer than {MAX_CHANNEL_BYTES} bytes: {channel!r}")
        self.settings = settings
        self.channel = channel
        self.poll_interval = poll_interval
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._conditions: dict[str, threading.Condition] = {}
        self._key_events: dict[str, int] = {}
        self._all_events = 0  # bumped by everything that wakes every waiter
        self._connected = False
        self._first_attempt = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._waiting: dict[str, int] = {}
        self.reconnects = 0
        """Connections opened after the first one (the first dropped or was refused)."""
        self.notifications = 0
        """Notifications received, for monitoring and tests."""
        self.keepalives = 0
        """Keepalive queries sent on the listening connection."""
        self.backend_pid: int | None = None
        """Server process id of the current ``LISTEN`` connection, if connected."""

    def __repr__(self) -> str:
        return f"NotificationListener({self.settings.server!r}, channel={self.channel!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError("a NotificationListener holds a live connection and is never pickled")

    @property
    def connected(self) -> bool:
        """True while the ``LISTEN`` is in place."""
        return self._connected

    def start(self) -> None:
        """Start the listening thread; wait (up to the connect timeout) for its first connect."""
        with self._lock:
            if self._stopped.is_set():
                return  # stopped for good: waiters poll
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"pynenc-postgres-listen-{self.channel}", daemon=True
                )
                self._thread.start()
        self._first_attempt.wait(self.settings.connect_timeout + 1.0)

    def stop(self) -> None:
        """Stop listening; the thread closes its connection within a second."""
        self._stopped.set()
        with self._lock:
            self._connected = False
            self._wake_everyone()

    def waiters(self, key: str) -> int:
        """Threads of this process waiting for ``key`` right now."""
        return self._waiting.get(key, 0)

    def token(self, key: str) -> Token:
        if self._thread is None:
            self.start()
        events = self._key_events.get(key)
        if events is None:
            # Count this key's notifications from now on; other keys' are ignored, so
            # the bookkeeping is bounded by the keys this process consumes.
            with self._lock:
                events = self._key_events.setdefault(key, 0)
                self._conditions.setdefault(key, threading.Condition(self._lock))
        return (self._all_events, events)

    def wait(self, key: str, token: Token, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            condition = self._conditions.get(key)
            if condition is None:  # a token of another listener: nothing to wait for here
                return True
            self._waiting[key] = self._waiting.get(key, 0) + 1
            try:
                while (self._all_events, self._key_events.get(key, 0)) == token:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        # Listening all along and not notified: nothing new to find.
                        return False
                    if not self._connected:
                        # No LISTEN in place: poll, and look again as soon as it is back.
                        condition.wait(min(remaining, self.poll_interval))
                        return True
                    condition.wait(remaining)
                return True
            finally:
                self._waiting[key] -= 1

    # -- the listening thread ----------------------------------------------------

    def _dispatch(self, payload: str) -> None:
        with self._lock:
            self.notifications += 1
            if not payload:
                self._wake_everyone()
                return
            events = self._key_events.get(payload)
            if events is not None:
                self._key_events[payload] = events + 1
                self._conditions[payload].notify_all()

    def _wake_everyone(self) -> None:
        """Wake every waiter; the caller holds the lock."""
        self._all_events += 1
        for condition in self._conditions.values():
            condition.notify_all()

    def _set_connected(self, connected: bool) -> None:
        with self._lock:
            if connected != self._connected:
                self._connected = connected
                self._wake_everyone()

    def _connect(self) -> psycopg.Connection[Any]:
        s = self.settings
        return psycopg.connect(
            libpq_url(s.url),
            autocommit=True,
            connect_timeout=s.connect_timeout,
            application_name=s.application_name,
            # A silently dropped network path is found by TCP keepalives even while
            # no notification and no keepalive query is in flight.
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )

    def _run(self) -> None:
        delay = _RECONNECT_INITIAL_DELAY
        while not self._stopped.is_set():
            conn: psycopg.Connection[Any] | None = None
            try:
                conn = self._connect()
                conn.execute(f"LISTEN {quote_ident(self.channel)}")
                self.backend_pid = conn.info.backend_pid
                self._set_connected(True)
                self._first_attempt.set()
                delay = _RECONNECT_INITIAL_DELAY
                self._listen(conn)
            except Exception as exc:
                if not self._stopped.is_set():
                    logger.warning(
                        "LISTEN connection for channel %s lost or refused, consumers poll "
                        "every %.2fs until it is back (retry in %.1fs): %s",
                        self.channel,
                        self.poll_interval,
                        delay,
                        translate(exc, self.settings.server),
                    )
            finally:
                self.backend_pid = None
                self._set_connected(False)
                self._first_attempt.set()
                if conn is not None:
                    _close_quietly(conn)
            if self._stopped.wait(delay):
                return
            self.reconnects += 1
            delay = min(delay * 2, _RECONNECT_MAX_DELAY)

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        interval = _keepalive_interval(conn)
        next_keepalive = time.monotonic() + interval
        while not self._stopped.is_set():
            for notification in conn.notifies(timeout=min(_READ_SLICE_SEC, interval)):
                self._dispatch(notification.payload)
            if time.monotonic() >= next_keepalive:
                conn.execute("SELECT 1")
                self.keepalives += 1
                next_keepalive = time.monotonic() + interval


def _keepalive_interval(conn: psycopg.Connection[Any]) -> float:
    """Seconds between keepalives: well inside the server's ``idle_session_timeout``."""
    row = conn.execute(_IDLE_TIMEOUT_SQL).fetchone()
    idle_timeout = float(row[0]) if row and row[0] is not None else 0.0
    return min(KEEPALIVE_SEC, idle_timeout / 2) if idle_timeout > 0 else KEEPALIVE_SEC


def _close_quietly(conn: psycopg.Connection[Any]) -> None:
    try:
        conn.close()
    except Exception:  # the connection is already broken; nothing left to release
        logger.debug("closing a broken LISTEN connection failed", exc_info=True)


_listeners: dict[tuple[DatabaseSettings, str], NotificationListener] = {}
_listeners_lock = threading.Lock()


def get_listener(
    settings: DatabaseSettings, channel: str, poll_interval: float
) -> NotificationListener:
    """This process's listener on ``channel`` of the database (one connection each)."""
    key = (settings, channel)
    listener = _listeners.get(key)
    if listener is None or listener.pid != os.getpid():
        with _listeners_lock:
            listener = _listeners.get(key)
            if listener is None or listener.pid != os.getpid():
                listener = NotificationListener(settings, channel, poll_interval)
                _listeners[key] = listener
    return listener


def stop_all_listeners() -> None:
    """Stop every listener of this process (tests, shutdown).

    :func:`get_listener` then starts new ones; a caller still holding a stopped listener
    polls.
    """
    with _listeners_lock:
        listeners = list(_listeners.values())
        _listeners.clear()
    for listener in listeners:
        if listener.pid == os.getpid():
            listener.stop()


def _forget_listeners_in_child() -> None:
    # The parent's listening thread does not exist in the child, and its connection is
    # the parent's: drop both without closing the socket (psycopg never closes a
    # connection inherited from another process).
    global _listeners_lock
    _listeners_lock = threading.Lock()
    _listeners.clear()


os.register_at_fork(after_in_child=_forget_listeners_in_child)
