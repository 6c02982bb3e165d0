"""Blocking control of :class:`PostgresOrchestrator`: who waits for whose result.

Every runner loop asks for the invocations that others wait for (pynenc runs them
first). Usually there are none. The answer can only grow when an invocation starts to
wait for others (a new waiting edge: its statement notifies every process), or when an
invocation changes status in this process; an invocation waited for that becomes
runnable again elsewhere (a retry, a reroute) is routed and taken from its queue anyway.
So after an empty answer the query is not sent again until one of those happened, the
notifications stopped being live, or ``postgres_broker_recheck_interval_sec`` passed.
This needs the broker's notifications: with another broker every call queries.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pynenc.identifiers.invocation_id import InvocationId
from pynenc.invocation.status import InvocationStatus
from pynenc.orchestrator.base_orchestrator import BaseBlockingControl

from pynenc_postgres.broker import PostgresBroker
from pynenc_postgres.broker.sql import channel_name
from pynenc_postgres.db.notify import blocking_payload
from pynenc_postgres.db.wakeups import Notifier, existing_notifiers

if TYPE_CHECKING:
    from pynenc_postgres.orchestrator.postgres_orchestrator import PostgresOrchestrator

_AVAILABLE_FOR_RUN = sorted(s.value for s in InvocationStatus.get_available_for_run_statuses())
_JITTER = 0.2


class BlockingGate:
    """The last empty answer of this process, and what it depended on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._token: tuple[int, int] | None = None
        self._until = 0.0
        self.skipped = 0
        """Queries not sent because nothing could have changed their answer (for tests)."""
        self.edges_seen = True
        """Whether the last answer found any waiting edge of the app (True until known)."""

    def skip(self, token: tuple[int, int]) -> bool:
        with self._lock:
            if self._token == token and time.monotonic() < self._until:
                self.skipped += 1
                return True
            return False

    def answered(self, token: tuple[int, int], empty: bool, recheck: float) -> None:
        with self._lock:
            if empty:
                self._token = token
                self._until = time.monotonic() + recheck * (1 + random.uniform(-_JITTER, _JITTER))
            else:
                self._token = None


class PostgresBlockingControl(BaseBlockingControl):
    """
    Waiting edges between invocations, stored in ``pynenc_orchestrator_waiting``.

    An invocation that waits for others is not offered to run; one that others wait
    for, and that waits for nothing itself, is offered first, oldest registration
    first.

    :param PostgresOrchestrator orchestrator: the orchestrator whose tables are used.
    """

    def __init__(self, orchestrator: PostgresOrchestrator) -> None:
        self.orchestrator = orchestrator
        self.gate = BlockingGate()

    def _broker(self) -> PostgresBroker | None:
        """The app's broker when it notifies on this database, else None."""
        orch = self.orchestrator
        broker = orch.app.broker
        if isinstance(broker, PostgresBroker) and (broker.settings.url, broker.settings.schema) == (
            orch.settings.url,
            orch.settings.schema,
        ):
            return broker
        return None

    def _notifier(self) -> Notifier | None:
        broker = self._broker()
        if broker is None:
            return None
        notifier = broker.notifier()
        notifier.start()
        return notifier

    def status_changed(self) -> None:
        """This process changed a status: ask again, if that could make the answer grow.

        A status change can only add to the answer through a waiting edge (released
        waiters, a waited invocation runnable again). When the last answer found no edge
        of the app, only a new edge can, and every new edge is notified.
        """
        if self.gate.edges_seen:
            self.changed()

    def changed(self) -> None:
        """Something this process did may have made the answer grow: ask again."""
        orch = self.orchestrator
        for notifier in existing_notifiers(orch.settings, channel_name(orch.settings.schema)):
            notifier.blocking_changed(orch.app_id)

    def waiting_for_results(
        self,
        caller_invocation_id: InvocationId,
        result_invocation_ids: list[InvocationId],
    ) -> None:
        orch = self.orchestrator
        orch.db.execute(
            orch.sql.waiting_for_results,
            (
                orch.app_id,
                caller_invocation_id,
                sorted(set(result_invocation_ids)),
                channel_name(orch.settings.schema),
                blocking_payload(orch.app_id),
            ),
        )
        self.changed()

    def release_waiters(self, waited_invocation_id: InvocationId) -> None:
        orch = self.orchestrator
        orch.db.execute(
            orch.sql.release_waiters, (orch.app_id, waited_invocation_id, waited_invocation_id)
        )

    def get_blocking_invocations(self, max_num_invocations: int) -> Iterator[InvocationId]:
        """Waited-for invocations that wait for nothing and may run, oldest first."""
        orch = self.orchestrator
        notifier = self._notifier()
        token = notifier.blocking_token(orch.app_id) if notifier is not None else None
        if token is not None and self.gate.skip(token):
            return iter([])
        rows = orch.db.fetchall(
            orch.sql.blocking_invocations,
            (orch.app_id, orch.app_id, _AVAILABLE_FOR_RUN, max(max_num_invocations, 0)),
        )
        self.gate.edges_seen = bool(rows[0][1]) if rows else True
        rows = [row for row in rows if row[0] is not None]
        if token is not None:
            broker = self._broker()
            assert broker is not None
            recheck = float(broker.conf.postgres_broker_recheck_interval_sec)
            self.gate.answered(token, not rows, recheck)
        return iter([InvocationId(row[0]) for row in rows])
