"""Which idle consumer a notification wakes: one per routed invocation, not all of them.

The process that holds a host's ``LISTEN`` connection runs one :class:`Dispatcher`. Every
consumer of the host that found its queue empty tells it so (*idle*), with how long ago
its empty claim began and for how long it waits (its *lease*). A notification that
``n`` invocations were routed under a key wakes up to ``n`` of that key's idle consumers,
the most recently idle first, so the others sleep on and send nothing to the server.

What no idle consumer takes is kept as a *hint*, stamped with its arrival (for the
queues this host's consumers ever waited for; the channel carries every app's). A consumer
that reports idle gets a hint that arrived after its empty claim began at once: its
claim may have looked at the table before those rows were committed. Hints older than
its claim are dropped: that claim saw their rows (a notification is delivered only after
its rows are committed), and found the queue empty. Busy consumers need no hints: after
taking an invocation a consumer claims again until it finds the queue empty.

A woken consumer acknowledges the wake once it has claimed. A wake not acknowledged
within :data:`ACK_TIMEOUT_SEC` (its consumer stopped waiting just then, or its process
died) goes to another idle consumer, so a notification is not lost with the consumer it
was given to.

Only durations are exchanged (how long ago, for how long), never one process's clock
readings, and the dispatcher compares them with its own monotonic clock.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import Any, Protocol

from pynenc_postgres.db.notify import BLOCKING, EVERYONE, ROUTES, Event

ACK_TIMEOUT_SEC = 1.0
"""A wake not acknowledged within this goes to another idle consumer."""

MAX_HINTS = 10_000
"""Unassigned hints kept per key; older ones go first (they are the likeliest satisfied)."""

Message = dict[str, Any]


class Peer(Protocol):
    """A process of the host: the dispatcher's own, or one connected to it."""

    def send(self, message: Message) -> bool:
        """Deliver ``message``; False when the peer is gone (it is then dropped)."""


class Dispatcher:
    """The idle consumers of one host, and which of them each notification wakes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._peers: list[Peer] = []
        # key -> (peer, seat) -> (lease end, when it reported idle), most recent last
        self._idle: dict[str, OrderedDict[tuple[Peer, int], float]] = {}
        self._hints: dict[str, deque[float]] = {}
        # (peer, seat) -> (key, when woken): wakes not yet acknowledged
        self._unacked: dict[tuple[Peer, int], tuple[str, float]] = {}
        self._live = False
        self.wakes = 0
        """Consumers woken, for monitoring and tests."""

    # -- peers -----------------------------------------------------------------------

    def join(self, peer: Peer) -> None:
        """A process connected: it learns whether notifications are live."""
        with self._lock:
            self._peers.append(peer)
            live = self._live
        self._deliver([(peer, {"t": "live", "v": live})])

    def leave(self, peer: Peer) -> None:
        """A process disconnected (or died): its idle consumers are forgotten."""
        with self._lock:
            if peer in self._peers:
                self._peers.remove(peer)
            for seats in self._idle.values():
                for ref in [ref for ref in seats if ref[0] is peer]:
                    del seats[ref]
            lost = [self._unacked.pop(ref)[0] for ref in list(self._unacked) if ref[0] is peer]
        for key in lost:  # woken, then gone before it claimed: wake someone else
            self._routed(key, 1)

    # -- consumers -----------------------------------------------------------------------

    def idle(self, peer: Peer, seat: int, key: str, since_claim: float, lease: float) -> None:
        """Consumer ``seat`` of ``peer`` found ``key`` empty ``since_claim`` seconds ago.

        :param lease: seconds it waits; it is not woken after that unless it reports again.
        """
        now = time.monotonic()
        claim_started = now - max(since_claim, 0.0)
        out: list[tuple[Peer, Message]] = []
        with self._lock:
            self._unacked.pop((peer, seat), None)  # it claimed since: acknowledged
            hints = self._hints.get(key)
            while hints and hints[0] < claim_started:
                hints.popleft()
            if hints:
                hints.popleft()
                self._wake(peer, seat, key, now, out)
            else:
                seats = self._idle.setdefault(key, OrderedDict())
                seats.pop((peer, seat), None)
                seats[(peer, seat)] = now + max(lease, 0.0)
        self._deliver(out)

    def cancel(self, peer: Peer, seat: int, key: str) -> None:
        """Consumer ``seat`` took work on its own: it is no longer idle."""
        with self._lock:
            seats = self._idle.get(key)
            if seats is not None:
                seats.pop((peer, seat), None)

    def ack(self, peer: Peer, seat: int) -> None:
        """Consumer ``seat`` claimed after its wake."""
        with self._lock:
            self._unacked.pop((peer, seat), None)

    def expire(self) -> None:
        """Give the wakes that were not acknowledged in time to other idle consumers."""
        limit = time.monotonic() - ACK_TIMEOUT_SEC
        with self._lock:
            late = [ref for ref, (_, at) in self._unacked.items() if at < limit]
            keys = [self._unacked.pop(ref)[0] for ref in late]
        for key in keys:
            self._routed(key, 1)

    def _wake(
        self, peer: Peer, seat: int, key: str, now: float, out: list[tuple[Peer, Message]]
    ) -> None:
        """Wake one consumer (the caller holds the lock and delivers ``out``)."""
        self.wakes += 1
        self._unacked[(peer, seat)] = (key, now)
        out.append((peer, {"t": "wake", "s": seat, "k": key}))

    def waiting(self, key: str) -> int:
        """Idle consumers of ``key`` whose lease has not run out."""
        now = time.monotonic()
        with self._lock:
            return sum(1 for end in self._idle.get(key, {}).values() if end > now)

    # -- notifications -------------------------------------------------------------------

    def notified(self, event: Event) -> None:
        """A notification arrived on the ``LISTEN`` connection."""
        if event.kind == ROUTES:
            self._routed(event.key, event.count)
        elif event.kind == BLOCKING:
            self._broadcast({"t": "blk", "a": event.key})
        elif event.kind == EVERYONE:
            self.everyone()

    def everyone(self) -> None:
        """Every consumer looks at the table again (a notification may have been missed)."""
        with self._lock:
            for seats in self._idle.values():
                seats.clear()  # the keys stay known: later routes to them are hints
            self._hints.clear()
            self._unacked.clear()
        self._broadcast({"t": "gen"})

    def set_live(self, live: bool) -> None:
        """The ``LISTEN`` connection became live, or stopped being so."""
        with self._lock:
            changed = live != self._live
            self._live = live
        if changed:
            self._broadcast({"t": "live", "v": live})
            if live:
                self.everyone()  # whatever was routed meanwhile, nobody was told

    def _routed(self, key: str, count: int) -> None:
        now = time.monotonic()
        out: list[tuple[Peer, Message]] = []
        with self._lock:
            seats = self._idle.get(key)
            if seats is None:
                return  # no consumer of this host ever waited for this queue
            while count > 0 and seats:
                (peer, seat), lease_end = seats.popitem(last=True)
                if lease_end <= now:
                    continue  # stopped waiting: it will claim again on its own
                self._wake(peer, seat, key, now, out)
                count -= 1
            if count > 0:
                hints = self._hints.setdefault(key, deque(maxlen=MAX_HINTS))
                hints.extend([now] * min(count, MAX_HINTS))
        self._deliver(out)

    def _broadcast(self, message: Message) -> None:
        with self._lock:
            peers = list(self._peers)
        self._deliver((peer, message) for peer in peers)

    def _deliver(self, out: Iterable[tuple[Peer, Message]]) -> None:
        """Send outside the lock; a peer that cannot take a message is dropped, and a
        wake it missed goes to another idle consumer."""
        for peer, message in out:
            if not peer.send(message):
                self.leave(peer)  # its unacknowledged wakes go to others
