"""``LISTEN``/``NOTIFY``: what a notification says, and the connection that receives them.

A notification is only a hint that a table changed; the table stays the source of truth.
Every routing statement sends one on the broker's channel, committed with its rows; the
payload says which queue of which app, and how many invocations:

* ``<queue>:<app>``: one invocation routed to that queue (queue names never contain
  ``:``, so the first one separates the two);
* ``#<n>:<queue>:<app>``: ``n`` invocations routed at once;
* ``!<app>``: the app's blocking-control edges changed (an invocation now waits for
  others);
* ``?<token>``: a probe the listener sends itself to find out whether notifications
  arrive at all (behind a transaction-mode pooler they do not);
* ``""``: anything; every consumer looks at the table again (a payload too long for
  Postgres' 8,000 bytes is sent empty).

Queue names match ``[A-Za-z0-9_.-]+``, so no queue key starts with ``#``, ``!`` or ``?``.

:class:`NotificationListener` keeps one dedicated connection on a channel (never one of
the pool's: ``LISTEN`` is session state) and reads it from a daemon thread, which
reconnects and listens again after the connection drops. Which process of a host holds
it, and how its notifications reach the consumers, is :mod:`pynenc_postgres.db.wakeups`'
business.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from pynenc_postgres.db.errors import translate
from pynenc_postgres.db.settings import DatabaseSettings, libpq_url
from pynenc_postgres.db.sql import quote_ident

logger = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 7999
"""``NOTIFY`` payloads must be shorter than 8000 bytes; a longer one is sent as ``""``."""

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

PROBE_TIMEOUT_SEC = 5.0
"""How long a new ``LISTEN`` waits for its own probe before it counts as deaf."""
PROBE_ATTEMPTS = 3
"""Probes sent (on fresh connections) before notifications are declared not to arrive."""

ROUTES = "routes"
BLOCKING = "blocking"
EVERYONE = "everyone"
PROBE = "probe"


def _fits(payload: str) -> bool:
    return len(payload.encode("utf-8", "surrogatepass")) <= MAX_PAYLOAD_BYTES


def route_payload(key: str, count: int = 1) -> str:
    """The payload announcing ``count`` invocations routed under ``key`` (``queue:app``)."""
    payload = key if count == 1 else f"#{count}:{key}"
    return payload if _fits(payload) else ""


def notify_payload(key: str) -> str:
    """The payload announcing one invocation routed under ``key``."""
    return route_payload(key, 1)


def blocking_payload(app_id: str) -> str:
    """The payload announcing that ``app_id``'s blocking-control edges changed."""
    payload = f"!{app_id}"
    return payload if _fits(payload) else ""


@dataclass(frozen=True)
class Event:
    """What one notification payload says.

    :param kind: ``routes``, ``blocking``, ``everyone`` or ``probe``.
    :param key: the queue key (``routes``), the app id (``blocking``), the probe token.
    :param count: invocations routed (``routes``).
    """

    kind: str
    key: str = ""
    count: int = 1


def parse_payload(payload: str) -> Event:
    """The :class:`Event` of a payload; unknown forms wake everyone (a safe reading)."""
    if not payload:
        return Event(EVERYONE)
    first = payload[0]
    if first == "!":
        return Event(BLOCKING, payload[1:])
    if first == "?":
        return Event(PROBE, payload[1:])
    if first == "#":
        count, sep, key = payload[1:].partition(":")
        if sep and count.isdigit() and int(count) > 0:
            return Event(ROUTES, key, int(count))
        return Event(EVERYONE)
    return Event(ROUTES, payload, 1)


class NotificationListener:
    """One ``LISTEN`` connection on ``channel``, read by a daemon thread.

    After each ``LISTEN`` it sends a probe notification from another connection (the
    process's pool) and waits for it: only once its probe arrived is it *live*. Behind
    a transaction-mode pooler the probe never arrives; after :data:`PROBE_ATTEMPTS`
    attempts the listener gives up for good (*deaf*), logs a warning and closes.

    :param settings: the database to listen on.
    :param channel: channel name, at most 63 bytes.
    :param on_payload: called with every payload received (probes excepted).
    :param on_live: called with True once live, with False when that ends.
    :param send_probe: sends ``NOTIFY channel, payload`` from another connection.
    :param on_tick: called about once a second while live.
    """

    def __init__(
        self,
        settings: DatabaseSettings,
        channel: str,
        on_payload: Callable[[str], None],
        on_live: Callable[[bool], None],
        send_probe: Callable[[str], None],
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        if len(channel.encode()) > MAX_CHANNEL_BYTES:
            raise ValueError(f"channel name longer than {MAX_CHANNEL_BYTES} bytes: {channel!r}")
        self.settings = settings
        self.channel = channel
        self._on_payload = on_payload
        self._on_live = on_live
        self._send_probe = send_probe
        self._on_tick = on_tick
        self._stopped = threading.Event()
        self._first_attempt = threading.Event()
        self._thread: threading.Thread | None = None
        self._live = False
        self.deaf = False
        """True once probes never arrived: notifications cannot reach this server session."""
        self.reconnects = 0
        """Connections opened after the first one (the first dropped or was refused)."""
        self.notifications = 0
        """Notifications received, probes included, for monitoring and tests."""
        self.keepalives = 0
        """Keepalive queries sent on the listening connection."""
        self.backend_pid: int | None = None
        """Server process id of the current ``LISTEN`` connection, if connected."""

    def __repr__(self) -> str:
        return f"NotificationListener({self.settings.server!r}, channel={self.channel!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError("a NotificationListener holds a live connection and is never pickled")

    @property
    def live(self) -> bool:
        """True while the ``LISTEN`` is in place and its probe came back."""
        return self._live

    @property
    def connected(self) -> bool:
        return self._live

    def start(self, wait: float = 0.0) -> None:
        """Start the listening thread; wait up to ``wait`` seconds for it to be live."""
        if self._thread is None and not self._stopped.is_set():
            self._thread = threading.Thread(
                target=self._run, name=f"pynenc-postgres-listen-{self.channel}", daemon=True
            )
            self._thread.start()
        if wait > 0:
            self._first_attempt.wait(wait)

    def stop(self) -> None:
        """Stop listening; the thread closes its connection within a second."""
        self._stopped.set()
        self._set_live(False)

    def _set_live(self, live: bool) -> None:
        if live != self._live:
            self._live = live
            self._on_live(live)

    def _connect(self) -> psycopg.Connection[Any]:
        s = self.settings
        url = libpq_url(s.url)
        name = conninfo_to_dict(url).get("application_name") or s.application_name
        return psycopg.connect(
            url,
            autocommit=True,
            connect_timeout=s.connect_timeout,
            # pg_stat_activity tells the listening session from the pooled ones.
            application_name=f"{name} (listen)",
            # A silently dropped network path is found by TCP keepalives even while
            # no notification and no keepalive query is in flight.
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )

    def _run(self) -> None:
        delay = _RECONNECT_INITIAL_DELAY
        unanswered = 0
        while not self._stopped.is_set():
            conn: psycopg.Connection[Any] | None = None
            try:
                conn = self._connect()
                conn.execute(f"LISTEN {quote_ident(self.channel)}")
                self.backend_pid = conn.info.backend_pid
                if self._probe(conn):
                    unanswered = 0
                    delay = _RECONNECT_INITIAL_DELAY
                    self._set_live(True)
                    self._first_attempt.set()
                    self._listen(conn)
                elif not self._stopped.is_set():
                    unanswered += 1
                    if unanswered >= PROBE_ATTEMPTS:
                        self.deaf = True
                        logger.warning(
                            "Notifications on channel %s never arrived at %s (%d probes, "
                            "%.0fs each): the connection goes through a transaction-mode "
                            "pooler, or something else drops them. Idle consumers poll "
                            "instead (postgres_broker_wakeup=poll does so from the start).",
                            self.channel,
                            self.settings.server,
                            unanswered,
                            PROBE_TIMEOUT_SEC,
                        )
                        return
            except Exception as exc:
                if not self._stopped.is_set():
                    logger.warning(
                        "LISTEN connection for channel %s lost or refused, consumers poll "
                        "until it is back (retry in %.1fs): %s",
                        self.channel,
                        delay,
                        translate(exc, self.settings.server),
                    )
            finally:
                self.backend_pid = None
                self._set_live(False)
                self._first_attempt.set()
                if conn is not None:
                    _close_quietly(conn)
            if self._stopped.wait(delay):
                return
            self.reconnects += 1
            delay = min(delay * 2, _RECONNECT_MAX_DELAY)

    def _probe(self, conn: psycopg.Connection[Any]) -> bool:
        """Notify this channel from another connection; True once it arrives here."""
        token = secrets.token_hex(8)
        self._send_probe(f"?{token}")
        deadline = time.monotonic() + PROBE_TIMEOUT_SEC
        while not self._stopped.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            for notification in conn.notifies(timeout=min(remaining, _READ_SLICE_SEC)):
                self.notifications += 1
                if notification.payload == f"?{token}":
                    return True
                self._deliver(notification.payload)
        return False

    def _deliver(self, payload: str) -> None:
        if payload.startswith("?"):
            return  # someone's probe
        self._on_payload(payload)

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        interval = _keepalive_interval(conn)
        next_keepalive = time.monotonic() + interval
        while not self._stopped.is_set():
            for notification in conn.notifies(timeout=min(_READ_SLICE_SEC, interval)):
                self.notifications += 1
                self._deliver(notification.payload)
            if self._on_tick is not None:
                self._on_tick()
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


def stop_all_listeners() -> None:
    """Stop every ``LISTEN`` connection and host link of this process (tests, shutdown).

    The next wait starts them again.
    """
    from pynenc_postgres.db.wakeups import stop_all_notifiers

    stop_all_notifiers()
