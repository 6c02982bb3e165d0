"""The broker's wait loop: claim only when the queue may hold something new.

pynenc's runners call ``retrieve_invocation`` in a loop, each call waiting at most
``queue_timeout_sec`` (0.1 s by default). A claim that found the queue empty is not sent
again until something may have changed (see :mod:`pynenc_postgres.db.wakeups`): while
notifications are live, an idle consumer sends nothing to the server between the
dispatcher's wake-ups and its safety re-checks.

Without live notifications (poll mode, or while the ``LISTEN`` connection is down or
deaf) an idle consumer claims on a schedule that backs off: the first re-claim after
``postgres_broker_poll_interval_sec``, then each interval twice the last, up to
``postgres_broker_poll_max_interval_sec``, each spread by up to a fifth either way. A
claim that finds work is followed by another at once (a burst is taken without waiting);
when that one finds nothing, the schedule goes on at the interval it had reached. A lone
task at an idle fleet then costs its finder one empty claim, where starting the schedule
over would cost one per step of the climb back (seven at the defaults).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from pynenc_postgres.db.wakeups import Notifier, Seat

T = TypeVar("T")

LEASE_GRACE_SEC = 0.5
"""An idle registration outlives the wait by this much: pynenc's loop calls again at once,
so a consumer registers about twice a second, and one that stopped calling is not
woken for long."""
RECHECK_JITTER = 0.2
"""Re-checks and polls are spread by up to this fraction, so a host's consumers do not
align."""


def _jitter() -> float:
    return 1.0 + random.uniform(-RECHECK_JITTER, RECHECK_JITTER)


class ClaimLoop:
    """When one process's consumers claim, and how they wait in between.

    :param notifier: this process's notifier (its ``poll`` scope never goes live).
    :param poll_interval: first interval between claims while polling.
    :param poll_max_interval: longest interval between claims while polling.
    :param recheck_interval: longest time an idle consumer trusts live notifications.
    """

    def __init__(
        self,
        notifier: Notifier,
        poll_interval: float,
        poll_max_interval: float,
        recheck_interval: float,
    ) -> None:
        self.notifier = notifier
        self.poll_interval = max(poll_interval, 0.0)
        self.poll_max_interval = max(poll_max_interval, self.poll_interval)
        self.recheck_interval = max(recheck_interval, 0.0)

    def retrieve(self, key: str, claim: Callable[[], T | None], timeout: float) -> T | None:
        """Claim under ``key`` now or once something changed, for at most ``timeout`` s."""
        notifier = self.notifier
        notifier.start()
        seat = notifier.seat(key, self.poll_interval)
        deadline = time.monotonic() + timeout
        while True:
            if self._due(seat):
                token = notifier.token(key)
                started = time.monotonic()
                seat.woken = False
                found = claim()
                if seat.owes_ack:
                    notifier.ack(seat)
                if found is not None:
                    self._found(seat)
                    return found
                self._empty(seat, started, token)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._wait(seat, deadline)

    def _due(self, seat: Seat) -> bool:
        """True when a claim could find what the last one did not."""
        if seat.last_empty is None or seat.woken:
            return True
        if self.notifier.token(seat.key) != seat.token:
            return True
        now = time.monotonic()
        if self.notifier.live:
            return now >= seat.recheck_at
        return now >= seat.poll_at

    def _empty(self, seat: Seat, started: float, token: tuple[int, int]) -> None:
        # The first empty claim keeps the seat's interval: the first one for a new seat,
        # the one reached before work was found otherwise.
        if seat.last_empty is not None:
            seat.interval = min(self.poll_max_interval, seat.interval * 2)
        seat.last_empty = started
        seat.token = token
        # Both schedules are spread: a host's consumers start together, and on a common
        # beat they would all claim at the same instants (and a task would wait for the
        # next beat however many of them are idle).
        seat.recheck_at = started + self.recheck_interval * _jitter()
        seat.poll_at = started + seat.interval * _jitter()

    def _found(self, seat: Seat) -> None:
        seat.last_empty = None
        if seat.lease_until > time.monotonic():
            self.notifier.cancel(seat)

    def _wait(self, seat: Seat, deadline: float) -> None:
        """Sleep until the seat is due to claim again, or until ``deadline``."""
        notifier = self.notifier
        now = time.monotonic()
        if notifier.live and seat.lease_until < deadline:
            lease = deadline - now + LEASE_GRACE_SEC
            seat.lease_until = now + lease
            assert seat.last_empty is not None
            notifier.report_idle(seat, now - seat.last_empty, lease)
        with notifier.cond:
            while not self._due(seat):
                now = time.monotonic()
                assert seat.last_empty is not None
                due = seat.recheck_at if notifier.live else seat.poll_at
                limit = min(deadline, due) - now
                if limit <= 0:
                    return
                notifier.cond.wait(limit)
