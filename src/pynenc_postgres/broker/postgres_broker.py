"""PostgresBroker: pynenc's queue in PostgreSQL, shared by runners on many hosts."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pynenc.broker.base_broker import BaseBroker
from pynenc.identifiers.invocation_id import InvocationId

from pynenc_postgres.broker.sql import BrokerSql, statements
from pynenc_postgres.conf import ConfigBrokerPostgres
from pynenc_postgres.db import telemetry
from pynenc_postgres.db.component import DatabaseComponent
from pynenc_postgres.db.errors import PostgresConfigError
from pynenc_postgres.db.notify import PollingWakeups, Wakeups, get_listener, notify_payload

if TYPE_CHECKING:
    from pynenc.app import Pynenc

WAKEUP_MODES = ("auto", "listen", "poll")
SYNCHRONOUS_COMMIT_VALUES = frozenset(
    ("", "on", "off", "local", "remote_write", "remote_apply", "true", "false", "yes", "no")
)


class PostgresBroker(DatabaseComponent, BaseBroker):
    """
    Broker that keeps pynenc's queues in one PostgreSQL table, shared by every runner.

    Routing inserts a row per invocation (and notifies idle consumers in the same
    statement); retrieving deletes the head of the queue, highest priority first and
    in routing order within a priority, with one ``DELETE ... FOR UPDATE SKIP LOCKED``.
    Consumers in many processes and hosts never receive the same row twice and never
    wait for each other. An idle ``retrieve_invocation`` waits up to pynenc's
    ``queue_timeout_sec`` for work, woken by ``LISTEN``/``NOTIFY`` or by polling (see
    ``postgres_broker_wakeup``).

    :param Pynenc app: the pynenc application.
    """

    def __init__(self, app: Pynenc) -> None:
        super().__init__(app)
        self._wakeups: Wakeups | None = None
        self._wakeups_pid = 0

    @cached_property
    def conf(self) -> ConfigBrokerPostgres:
        return ConfigBrokerPostgres(
            config_values=self.app.config_values,
            config_filepath=self.app.config_filepath,
        )

    @cached_property
    def sql(self) -> BrokerSql:
        return statements(self.settings.schema)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        # The LISTEN connection belongs to this process; a worker opens its own.
        state["_wakeups"] = None
        state["_wakeups_pid"] = 0
        return state

    @property
    def wakeup_mode(self) -> str:
        """``listen`` or ``poll``: how idle consumers of this process learn about work."""
        mode = str(self.conf.postgres_broker_wakeup).strip().lower()
        if mode not in WAKEUP_MODES:
            raise PostgresConfigError(
                f"postgres_broker_wakeup is {self.conf.postgres_broker_wakeup!r}; use 'listen' "
                "(LISTEN/NOTIFY), 'poll' (behind a transaction-mode pooler such as PgBouncer) "
                "or 'auto' (poll when postgres_apply_settings is 'transaction')."
            )
        if mode == "auto":
            return "poll" if self.settings.apply_settings == "transaction" else "listen"
        return mode

    def wakeups(self) -> Wakeups:
        """This process's wake-ups: its one ``LISTEN`` connection, or polling."""
        wakeups = self._wakeups
        if wakeups is None or self._wakeups_pid != os.getpid():
            interval = float(self.conf.postgres_broker_poll_interval_sec)
            if self.wakeup_mode == "listen":
                wakeups = get_listener(self.settings, self.sql.channel, interval)
            else:
                wakeups = PollingWakeups(interval)
            self._wakeups = wakeups
            self._wakeups_pid = os.getpid()
        return wakeups

    @staticmethod
    def wake_key(app_id: str, queue_name: str) -> str:
        """Key of the waiters of one app's queue (queue names cannot contain ``:``)."""
        return f"{queue_name}:{app_id}"

    # -- routing -------------------------------------------------------------------

    def _route_invocation(
        self, invocation_id: InvocationId, queue_name: str, priority: float
    ) -> None:
        payload = notify_payload(self.wake_key(self.app_id, queue_name))
        self.db.execute(
            self.sql.route_one,
            (self.app_id, queue_name, priority, invocation_id, self.sql.channel, payload),
        )

    def _route_invocations(
        self,
        invocation_ids: Sequence[InvocationId],
        queue_name: str,
        priority: float,
    ) -> None:
        if not invocation_ids:
            return
        payload = notify_payload(self.wake_key(self.app_id, queue_name))
        self.db.execute(
            self.sql.route_many,
            (
                self.app_id,
                queue_name,
                priority,
                [str(invocation_id) for invocation_id in invocation_ids],
                self.sql.channel,
                payload,
            ),
        )

    # -- consuming -----------------------------------------------------------------

    def retrieve_invocation(self, queue_name: str | None = None) -> InvocationId | None:
        """Take the next invocation of ``queue_name``, waiting up to ``queue_timeout_sec``.

        :param queue_name: the queue to take from; the first configured queue if None.
        :return: the invocation id, now removed from the queue, or None if none came.
        """
        queue = self.conf.queues[0] if queue_name is None else queue_name
        self._validate_queue_names((queue,))
        app_id = self.app_id
        claim, params = self._claim(queue)
        wakeups = self.wakeups()
        key = self.wake_key(app_id, queue)
        deadline: float | None = None
        while True:
            # The token is taken before the claim looks at the table: work routed after
            # that look makes the wait below return at once.
            token = wakeups.token(key)
            row = telemetry.claim(self.db, claim, params, queue)
            if row is not None:
                return InvocationId(row[0])
            now = time.monotonic()
            if deadline is None:
                deadline = now + float(self.conf.queue_timeout_sec)
            remaining = deadline - now
            if remaining <= 0 or not wakeups.wait(key, token, remaining):
                return None

    def _claim(self, queue: str) -> tuple[str, tuple[str, ...]]:
        """The claim statement and its parameters for ``queue``."""
        relaxed = str(self.conf.postgres_broker_claim_synchronous_commit).strip().lower()
        if relaxed not in SYNCHRONOUS_COMMIT_VALUES:
            raise PostgresConfigError(
                "postgres_broker_claim_synchronous_commit is "
                f"{self.conf.postgres_broker_claim_synchronous_commit!r}; use a "
                "synchronous_commit value (off, local, on, remote_write, remote_apply), or "
                "leave it empty to keep the connection's setting."
            )
        if relaxed:
            return self.sql.claim_relaxed, (self.app_id, self.app_id, queue, relaxed)
        return self.sql.claim, (self.app_id, self.app_id, queue)

    def count_invocations(self, queue_names: Sequence[str] | None = None) -> int:
        """Invocations waiting in ``queue_names`` (every configured queue if None)."""
        queues = tuple(self.conf.queues) if queue_names is None else tuple(queue_names)
        self._validate_queue_names(queues)
        if not queues:
            return 0
        row = self.db.fetchone(self.sql.count, (self.app_id, list(queues)))
        return int(row[0]) if row else 0

    def purge(self) -> None:
        """Delete every queued invocation of this app, and nothing else."""
        self.db.execute(self.sql.purge_app, (self.app_id,))
