"""PostgresBroker: pynenc's queue in PostgreSQL, shared by runners on many hosts."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from pynenc.broker.base_broker import BaseBroker
from pynenc.identifiers.invocation_id import InvocationId

from pynenc_postgres.broker.sql import BrokerSql, statements
from pynenc_postgres.broker.waiting import ClaimLoop
from pynenc_postgres.conf import ConfigBrokerPostgres
from pynenc_postgres.db import tables, telemetry
from pynenc_postgres.db.component import DatabaseComponent
from pynenc_postgres.db.errors import PostgresConfigError
from pynenc_postgres.db.notify import route_payload
from pynenc_postgres.db.wakeups import Notifier, existing_notifiers, get_notifier
from pynenc_postgres.retention.purge import purge_app

if TYPE_CHECKING:
    from pynenc.app import Pynenc

T = TypeVar("T")

WAKEUP_MODES = ("auto", "listen", "poll")
LISTENER_SCOPES = ("host", "process")
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
        self._loop: ClaimLoop | None = None
        self._loop_pid = 0

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
        # The notifier's connections belong to this process; a worker opens its own.
        state["_loop"] = None
        state["_loop_pid"] = 0
        return state

    @property
    def wakeup_mode(self) -> str:
        """``listen`` or ``poll``: how idle consumers of this process learn about work.

        ``auto`` is ``poll`` when ``postgres_apply_settings`` is ``transaction``, else
        ``listen``; a ``listen`` whose own probe notifications never arrive (a
        transaction-mode pooler) polls too, with a warning.
        """
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

    @property
    def listener_scope(self) -> str:
        """``host``: one ``LISTEN`` connection per host (Linux); ``process``: one each."""
        scope = str(self.conf.postgres_broker_listener_scope).strip().lower()
        if scope not in LISTENER_SCOPES:
            raise PostgresConfigError(
                f"postgres_broker_listener_scope is {self.conf.postgres_broker_listener_scope!r}"
                "; use 'host' (one LISTEN connection per host, shared by its processes) or "
                "'process' (one per process)."
            )
        return scope

    def notifier(self) -> Notifier:
        """This process's notifier (its ``poll`` scope in poll mode)."""
        return self.claim_loop().notifier

    def claim_loop(self) -> ClaimLoop:
        """This process's wait loop for idle consumers."""
        loop = self._loop
        if loop is None or self._loop_pid != os.getpid():
            scope = self.listener_scope if self.wakeup_mode == "listen" else "poll"
            loop = ClaimLoop(
                get_notifier(self.settings, self.sql.channel, scope),
                poll_interval=float(self.conf.postgres_broker_poll_interval_sec),
                poll_max_interval=float(self.conf.postgres_broker_poll_max_interval_sec),
                recheck_interval=float(self.conf.postgres_broker_recheck_interval_sec),
            )
            self._loop = loop
            self._loop_pid = os.getpid()
        return loop

    @staticmethod
    def wake_key(app_id: str, queue_name: str) -> str:
        """Key of the waiters of one app's queue (queue names cannot contain ``:``)."""
        return f"{queue_name}:{app_id}"

    # -- routing -------------------------------------------------------------------

    def route_invocation(
        self, invocation_id: InvocationId, queue_name: str, priority: float
    ) -> None:
        self._enlist()
        super().route_invocation(invocation_id, queue_name, priority)

    def route_invocations(
        self, invocation_ids: Sequence[InvocationId], queue_name: str, priority: float
    ) -> None:
        self._enlist()
        super().route_invocations(invocation_ids, queue_name, priority)

    def _route_invocation(
        self, invocation_id: InvocationId, queue_name: str, priority: float
    ) -> None:
        key = self.wake_key(self.app_id, queue_name)
        payload = route_payload(key)
        self.db.execute(
            self.sql.route_one,
            (self.app_id, queue_name, priority, invocation_id, self.sql.channel, payload),
        )
        self._routed(key)

    def _route_invocations(
        self,
        invocation_ids: Sequence[InvocationId],
        queue_name: str,
        priority: float,
    ) -> None:
        if not invocation_ids:
            return
        key = self.wake_key(self.app_id, queue_name)
        self.db.execute(
            self.sql.route_many,
            (
                self.app_id,
                queue_name,
                priority,
                [str(invocation_id) for invocation_id in invocation_ids],
                self.sql.channel,
                route_payload(key, len(invocation_ids)),
            ),
        )
        self._routed(key)

    def _routed(self, key: str) -> None:
        """This process's own consumers of ``key`` look at once (no notification needed)."""
        for notifier in existing_notifiers(self.settings, self.sql.channel):
            notifier.routed(key)

    # -- consuming -----------------------------------------------------------------

    def retrieve_invocation(self, queue_name: str | None = None) -> InvocationId | None:
        """Take the next invocation of ``queue_name``, waiting up to ``queue_timeout_sec``.

        A consumer whose last claim found the queue empty claims again only once
        something may have changed (a notification woke it, this process routed work,
        its re-check is due), or on the poll schedule without notifications.

        :param queue_name: the queue to take from; the first configured queue if None.
        :return: the invocation id, now removed from the queue, or None if none came.
        """
        queue = self.conf.queues[0] if queue_name is None else queue_name
        claim, params = self._claim(queue)
        row = self.retrieve_with(queue, lambda: self.db.fetchone(claim, params))
        return InvocationId(row[0]) if row is not None else None

    def retrieve_with(self, queue_name: str, claim: Callable[[], T | None]) -> T | None:
        """:meth:`retrieve_invocation`'s wait for work, around another claim statement.

        ``claim`` takes the head of ``queue_name`` and returns what it read, or None when
        the queue was empty; the claim loop calls it again only when the queue may hold
        something new, until ``queue_timeout_sec`` has passed. The orchestrator passes a
        claim that also moves the invocation to PENDING in the same statement.

        :param queue_name: the queue to take from.
        :param claim: one attempt to take the head of the queue.
        :return: what the first successful claim returned, or None if none came.
        """
        self._validate_queue_names((queue_name,))
        return self.claim_loop().retrieve(
            self.wake_key(self.app_id, queue_name),
            lambda: telemetry.claim(claim, queue_name),
            float(self.conf.queue_timeout_sec),
        )

    def claim_synchronous_commit(self) -> str:
        """The ``synchronous_commit`` of a claim's transaction; empty keeps the connection's."""
        relaxed = str(self.conf.postgres_broker_claim_synchronous_commit).strip().lower()
        if relaxed not in SYNCHRONOUS_COMMIT_VALUES:
            raise PostgresConfigError(
                "postgres_broker_claim_synchronous_commit is "
                f"{self.conf.postgres_broker_claim_synchronous_commit!r}; use a "
                "synchronous_commit value (off, local, on, remote_write, remote_apply), or "
                "leave it empty to keep the connection's setting."
            )
        return relaxed

    def _claim(self, queue: str) -> tuple[str, tuple[str, ...]]:
        """The claim statement and its parameters for ``queue``."""
        relaxed = self.claim_synchronous_commit()
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
        purge_app(self.db, self.settings.schema, self.app_id, (tables.BROKER_MESSAGE,))
