"""What this process knows of new work: its seat in the host's notifier.

Each consumer thread has a :class:`Seat` per queue key. A seat whose last claim found
the queue empty claims again only when something may have changed:

* the host's dispatcher woke it (a notification announced work under its key);
* this process routed work under its key (its own writes, seen at once);
* the *generation* moved: the notifications became live again, the leader changed, a
  notification could not be read: whatever happened meanwhile, nobody was told;
* its safety re-check is due (``postgres_broker_recheck_interval_sec``): a hint lost
  in a way nobody noticed costs at most that much latency.

:class:`Notifier` is the process's state for one database and channel, in one of three
scopes:

* ``host``: one ``LISTEN`` connection per host, held by the process that won the
  election of :mod:`pynenc_postgres.db.host`; the others follow it over a Unix socket.
  Linux only;
* ``process``: this process holds its own ``LISTEN`` connection and dispatches to its
  own threads (the fallback where abstract sockets do not exist);
* ``poll``: no notifications at all: seats claim on a schedule.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from pynenc_postgres.db import host
from pynenc_postgres.db.dispatch import Dispatcher, Message
from pynenc_postgres.db.notify import NotificationListener, parse_payload
from pynenc_postgres.db.settings import DatabaseSettings, libpq_url

logger = logging.getLogger(__name__)

SCOPES = ("host", "process", "poll")
LISTEN_START_WAIT_SEC = 2.0
"""How long a process's first wait gives its ``LISTEN`` connection to become live."""

Token = tuple[int, int]


class Seat:
    """One consumer thread's state for one queue key."""

    __slots__ = (
        "id",
        "interval",
        "key",
        "last_empty",
        "lease_until",
        "owes_ack",
        "poll_at",
        "recheck_at",
        "token",
        "woken",
    )

    def __init__(self, seat_id: int, key: str, interval: float) -> None:
        self.id = seat_id
        self.key = key
        self.last_empty: float | None = None
        """``time.monotonic()`` when the last claim, which found nothing, began."""
        self.token: Token = (0, 0)
        self.woken = False
        self.owes_ack = False
        self.interval = interval
        self.recheck_at = 0.0
        self.poll_at = 0.0
        """``time.monotonic()`` of the next claim while polling."""
        self.lease_until = 0.0


class _LocalPeer:
    """The leader's own process, as its dispatcher sees it."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    def send(self, message: Message) -> bool:
        self.notifier.handle(message)
        return True


class Notifier:
    """This process's notifications for one database and channel.

    :param settings: the database.
    :param channel: the ``NOTIFY`` channel.
    :param scope: ``host``, ``process`` or ``poll`` (see the module docstring).
    """

    def __init__(self, settings: DatabaseSettings, channel: str, scope: str) -> None:
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}")
        if scope == "host" and not host.host_scope_available():
            scope = "process"
        self.settings = settings
        self.channel = channel
        self.scope = scope
        self.pid = os.getpid()
        self.cond = threading.Condition()
        self.generation = 0
        self.live = False
        self.role = ""
        """``leader``, ``follower``, or empty before the first use and in poll scope."""
        self.wakes = 0
        """Wakes received by this process's consumers."""
        self.listener: NotificationListener | None = None
        self.dispatcher: Dispatcher | None = None
        self._local: _LocalPeer | None = None
        self._leadership: host.Leadership | None = None
        self._following: host.Following | None = None
        self._routes: dict[str, int] = {}
        self._blocking: dict[str, int] = {}
        self._seats: dict[int, Seat] = {}
        self._by_thread: dict[tuple[int, str], Seat] = {}
        self._next_seat = 0
        self._start_lock = threading.Lock()
        self._started = False
        self._stopped = False

    def __repr__(self) -> str:
        return f"Notifier({self.settings.server!r}, {self.channel!r}, scope={self.scope!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError("a Notifier holds live connections and is never pickled")

    # -- starting ----------------------------------------------------------------------

    def start(self) -> None:
        """Connect (lead or follow) on first use; wait briefly for notifications."""
        if self._started or self.scope == "poll":
            return
        with self._start_lock:
            if self._started or self._stopped:
                return
            self._started = True
            self._join()
        if self.listener is not None:
            self.listener.start(wait=LISTEN_START_WAIT_SEC)
        else:
            deadline = time.monotonic() + LISTEN_START_WAIT_SEC
            with self.cond:
                while not self.live and time.monotonic() < deadline and self.role == "follower":
                    self.cond.wait(deadline - time.monotonic())

    def _join(self) -> None:
        """Lead the host (or this process), or follow the leader."""
        if self.scope == "host":
            elected = host.elect(host.abstract_name(self._identity()))
            if elected is not None and elected[0] == "follow":
                self.role = "follower"
                self._following = host.Following(elected[1], self.handle, self._leader_lost)
                return
            if elected is not None:
                self._lead(elected[1])
                return
        self._lead(None)

    def _lead(self, server: Any) -> None:
        self.role = "leader"
        dispatcher = Dispatcher()
        self._local = _LocalPeer(self)
        dispatcher.join(self._local)
        self.dispatcher = dispatcher
        if server is not None:
            self._leadership = host.Leadership(server, dispatcher)
        self.listener = NotificationListener(
            self.settings,
            self.channel,
            on_payload=lambda payload: dispatcher.notified(parse_payload(payload)),
            on_live=dispatcher.set_live,
            send_probe=self._send_probe,
            on_tick=dispatcher.expire,
        )

    def _send_probe(self, payload: str) -> None:
        from pynenc_postgres.db.engine import get_database

        get_database(self.settings).execute("SELECT pg_notify(%s, %s)", (self.channel, payload))

    def _identity(self) -> str:
        params = conninfo_to_dict(libpq_url(self.settings.url))
        facts = {k: params.get(k) for k in ("host", "hostaddr", "port", "dbname", "user")}
        facts["channel"] = self.channel
        return host.describe(facts)

    def _leader_lost(self) -> None:
        """The leader went away: look at the table again, and lead or follow anew."""
        self.handle({"t": "live", "v": False})
        self.handle({"t": "gen"})
        if self._stopped or self.pid != os.getpid():
            return
        with self._start_lock:
            self._following = None
            self._join()
        if self.listener is not None:
            self.listener.start()

    def stop(self) -> None:
        """Stop listening and leave the host; waiting consumers poll from now on."""
        self._stopped = True
        if self.listener is not None:
            self.listener.stop()
        if self._leadership is not None:
            self._leadership.close()
        if self._following is not None:
            self._following.close()
        self.handle({"t": "live", "v": False})

    def forget_in_child(self) -> None:
        """After fork: drop the parent's connections without touching them."""
        self._stopped = True
        if self._leadership is not None:
            self._leadership.forget_in_child()
        if self._following is not None:
            self._following.forget_in_child()

    # -- messages from the dispatcher -----------------------------------------------------

    def handle(self, message: Message) -> None:
        """A message of the host's dispatcher (in the leader, a direct call)."""
        kind = message.get("t")
        with self.cond:
            if kind == "wake":
                seat = self._seats.get(int(message["s"]))
                if seat is not None:
                    seat.woken = True
                    seat.owes_ack = True
                    seat.lease_until = 0.0
                    self.wakes += 1
            elif kind == "gen":
                self.generation += 1
                for seat in self._seats.values():
                    seat.lease_until = 0.0
            elif kind == "blk":
                app_id = str(message["a"])
                self._blocking[app_id] = self._blocking.get(app_id, 0) + 1
                return
            elif kind == "live":
                self.live = bool(message["v"])
                if not self.live:
                    for seat in self._seats.values():
                        seat.lease_until = 0.0
            self.cond.notify_all()

    # -- the consumers' side ------------------------------------------------------------

    def seat(self, key: str, interval: float) -> Seat:
        """The calling thread's seat for ``key``."""
        ident = threading.get_ident()
        seat = self._by_thread.get((ident, key))
        if seat is None:
            with self.cond:
                self._next_seat += 1
                seat = Seat(self._next_seat, key, interval)
                self._seats[seat.id] = seat
                self._by_thread[(ident, key)] = seat
        return seat

    def token(self, key: str) -> Token:
        """Changes whenever this process must look at ``key``'s queue again by itself."""
        return (self.generation, self._routes.get(key, 0))

    def blocking_token(self, app_id: str) -> Token:
        """Changes whenever ``app_id``'s blocking-control answer may have grown."""
        return (self.generation, self._blocking.get(app_id, 0))

    def routed(self, key: str) -> None:
        """This process routed work under ``key``: its own consumers look at once."""
        with self.cond:
            self._routes[key] = self._routes.get(key, 0) + 1
            self.cond.notify_all()

    def blocking_changed(self, app_id: str) -> None:
        """This process changed what blocking control could answer for ``app_id``."""
        with self.cond:
            self._blocking[app_id] = self._blocking.get(app_id, 0) + 1

    def report_idle(self, seat: Seat, since_claim: float, lease: float) -> None:
        """Tell the dispatcher that ``seat`` found its queue empty and waits."""
        if self.dispatcher is not None and self._local is not None:
            self.dispatcher.idle(self._local, seat.id, seat.key, since_claim, lease)
            return
        following = self._following
        message = {"t": "idle", "s": seat.id, "k": seat.key, "a": since_claim, "w": lease}
        if following is None or not following.send(message):
            seat.lease_until = 0.0  # not registered: it polls until the link is back

    def cancel(self, seat: Seat) -> None:
        """``seat`` took work on its own while registered idle."""
        seat.lease_until = 0.0
        if self.dispatcher is not None and self._local is not None:
            self.dispatcher.cancel(self._local, seat.id, seat.key)
        elif self._following is not None:
            self._following.send({"t": "cancel", "s": seat.id, "k": seat.key})

    def ack(self, seat: Seat) -> None:
        """``seat`` claimed after its wake: the dispatcher need not give it to another."""
        seat.owes_ack = False
        if self.dispatcher is not None and self._local is not None:
            self.dispatcher.ack(self._local, seat.id)
        elif self._following is not None:
            self._following.send({"t": "ack", "s": seat.id})

    def waiting(self, key: str) -> int:
        """Seats of this process registered idle for ``key`` right now (for tests)."""
        now = time.monotonic()
        return sum(1 for s in self._seats.values() if s.key == key and s.lease_until > now)


_notifiers: dict[tuple[DatabaseSettings, str, str], Notifier] = {}
_notifiers_lock = threading.Lock()


def get_notifier(settings: DatabaseSettings, channel: str, scope: str) -> Notifier:
    """This process's notifier for the database and channel (created, not started)."""
    key = (settings, channel, scope)
    notifier = _notifiers.get(key)
    if notifier is None or notifier.pid != os.getpid():
        with _notifiers_lock:
            notifier = _notifiers.get(key)
            if notifier is None or notifier.pid != os.getpid():
                notifier = Notifier(settings, channel, scope)
                _notifiers[key] = notifier
    return notifier


def existing_notifiers(settings: DatabaseSettings, channel: str) -> list[Notifier]:
    """The notifiers this process already has for the database and channel."""
    pid = os.getpid()
    return [
        n
        for (s, c, _), n in list(_notifiers.items())
        if s == settings and c == channel and n.pid == pid
    ]


def stop_all_notifiers() -> None:
    """Stop every notifier of this process (tests, shutdown); later calls start new ones."""
    with _notifiers_lock:
        notifiers = list(_notifiers.values())
        _notifiers.clear()
    for notifier in notifiers:
        if notifier.pid == os.getpid():
            notifier.stop()


def _forget_notifiers_in_child() -> None:
    # The parent's threads do not exist in the child; its sockets are the parent's. The
    # child closes its copies (so a name the parent holds is freed when the parent
    # exits) and builds its own notifier on first use.
    global _notifiers_lock
    _notifiers_lock = threading.Lock()
    for notifier in _notifiers.values():
        notifier.forget_in_child()
    _notifiers.clear()


os.register_at_fork(after_in_child=_forget_notifiers_in_child)
