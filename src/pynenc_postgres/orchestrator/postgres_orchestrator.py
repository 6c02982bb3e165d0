"""PostgresOrchestrator: who runs what, safe with runners on many hosts sharing one Postgres."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pynenc.exceptions import InvocationStatusError, InvocationStatusRaceConditionError
from pynenc.identifiers.invocation_id import InvocationId
from pynenc.invocation.status import (
    InvocationStatus,
    InvocationStatusRecord,
    status_record_transition,
)
from pynenc.orchestrator.atomic_service import (
    ActiveRunnerInfo,
    AtomicServiceExecution,
    AtomicServiceExecutionStatus,
)
from pynenc.orchestrator.base_orchestrator import BaseBlockingControl

from pynenc_postgres.broker import PostgresBroker
from pynenc_postgres.broker.sql import RUNNABLE_STATUSES
from pynenc_postgres.conf import ConfigOrchestratorPostgres
from pynenc_postgres.db import borrowed, tables
from pynenc_postgres.db.cache import BoundedCache
from pynenc_postgres.db.errors import InTransactionError
from pynenc_postgres.db.notify import route_payload
from pynenc_postgres.db.values import as_utc
from pynenc_postgres.orchestrator.blocking_control import PostgresBlockingControl
from pynenc_postgres.orchestrator.heartbeats import HeartbeatThrottle, heartbeat_interval
from pynenc_postgres.orchestrator.lifecycle import CombinedLifecycle
from pynenc_postgres.orchestrator.sql import OrchestratorSql, statements
from pynenc_postgres.orchestrator.transitions import rule_for, statuses_requiring_owner
from pynenc_postgres.retention.policy import RetentionPolicy
from pynenc_postgres.retention.purge import Scope, purge_app, run_purge
from pynenc_postgres.retention.scheduled import RetentionSchedule

if TYPE_CHECKING:
    import psycopg
    from pynenc.app import Pynenc
    from pynenc.identifiers.call_id import CallId
    from pynenc.identifiers.task_id import TaskId
    from pynenc.invocation.dist_invocation import DistributedInvocation
    from pynenc.orchestrator.atomic_service import AtomicServiceRun
    from pynenc.runner.runner_context import RunnerContext
    from pynenc.task import Task

_BLOCKED = AtomicServiceExecutionStatus.BLOCKED.value
# Final status records kept per process (least recently used first out).
FINAL_STATUS_CACHE_SIZE = 10_000
# The orchestrator's tables, and the retention schedule and records it applies.
ORCHESTRATOR_PURGED_TABLES = (*tables.ORCHESTRATOR_TABLES, *tables.RETENTION_TABLES)


class OwnerAliveError(InvocationStatusRaceConditionError):
    """RUNNING_RECOVERY refused: the owner of the RUNNING invocation heartbeats again."""


class PostgresOrchestrator(CombinedLifecycle):
    """
    Orchestrator that keeps invocation status, concurrency-control arguments, blocking
    control, runner heartbeats and the atomic-service slot in PostgreSQL.

    Every status change is one conditional ``UPDATE`` that checks pynenc's transition
    and ownership rules against the row itself, so when runners on different hosts
    race for an invocation exactly one wins and the others get pynenc's own error.
    Heartbeats, pending ages, a runner's death and the atomic-service slot are
    measured with the database server's clock only. A holder of the atomic service
    that dies (its runner stops heartbeating) loses the slot to the next runner. With
    the state backend in the same database, each step of an invocation's life (its
    registration, each status change with its history, result and route) is one
    statement (:class:`~pynenc_postgres.orchestrator.lifecycle.CombinedLifecycle`).

    :param Pynenc app: the pynenc application.
    """

    def __init__(self, app: Pynenc) -> None:
        super().__init__(app)

    @cached_property
    def conf(self) -> ConfigOrchestratorPostgres:
        return ConfigOrchestratorPostgres(
            config_values=self.app.config_values,
            config_filepath=self.app.config_filepath,
        )

    @cached_property
    def sql(self) -> OrchestratorSql:
        return statements(self.settings.schema)

    @cached_property
    def _blocking_control(self) -> PostgresBlockingControl:
        return PostgresBlockingControl(self)

    @property
    def blocking_control(self) -> BaseBlockingControl:
        return self._blocking_control

    def _ids(self, query: str, params: Sequence[Any]) -> Iterator[InvocationId]:
        return iter([InvocationId(row[0]) for row in self.db.fetchall(query, params)])

    # -- inside the application's transaction --------------------------------------

    def register_new_invocations(self, invocations: list[DistributedInvocation[Any, Any]]) -> None:
        self._enlist()
        super().register_new_invocations(invocations)

    def waiting_for_results(
        self,
        caller_invocation_id: InvocationId | None,
        result_invocation_ids: list[InvocationId],
    ) -> None:
        """Record the wait; refused inside ``in_transaction()``, where it could never end.

        :raises InTransactionError: called inside an ``in_transaction()`` block.
        """
        if borrowed.current() is not None:
            waited = ", ".join(result_invocation_ids[:5])
            more = len(result_invocation_ids) - 5
            raise InTransactionError(
                f"Waiting for the result of invocation {waited}"
                + (f" and {more} more" if more > 0 else "")
                + " inside in_transaction(): what is submitted there becomes visible to "
                "runners only when the application commits, so the wait could never end. "
                "Leave the block and commit first, then read invocation.result."
            )
        super().waiting_for_results(caller_invocation_id, result_invocation_ids)

    # -- registration and status ---------------------------------------------------

    def _register_new_invocations(
        self,
        invocations: list[DistributedInvocation[Any, Any]],
        runner_id: str | None = None,
    ) -> InvocationStatusRecord:
        """Register the invocations as REGISTERED; ones already known are left as they are."""
        by_id = {inv.invocation_id: inv for inv in invocations}
        # One lock order (by id) for every writer: concurrent batches cannot deadlock.
        ids = sorted(by_id)
        row = self.db.fetchone(
            self.sql.register_invocations,
            (
                self.app_id,
                runner_id,
                ids,
                [by_id[i].call.task.task_id.key for i in ids],
                [by_id[i].call.call_id.key for i in ids],
            ),
        )
        assert row is not None
        return InvocationStatusRecord(InvocationStatus.REGISTERED, runner_id, as_utc(row[0]))

    def _atomic_status_transition(
        self,
        invocation_id: InvocationId,
        status: InvocationStatus,
        runner_id: str | None = None,
    ) -> InvocationStatusRecord:
        """Check pynenc's transition and ownership rules and write, in one ``UPDATE``.

        The statement only matches a row whose current status may move to ``status``
        and, unless ``status`` overrides ownership, whose owner is the caller when its
        status requires one. When it matches nothing the row is read to raise pynenc's
        own error for what it holds now.

        :raises InvocationStatusTransitionError: the current status cannot move there.
        :raises InvocationStatusOwnershipError: the caller does not own the invocation.
        :raises InvocationStatusRaceConditionError: the row changed again meanwhile.
        :raises KeyError: the invocation is not registered.
        """
        return self._change_status(invocation_id, status, runner_id, uuid.uuid4().hex)

    def _change_status(
        self,
        invocation_id: InvocationId,
        status: InvocationStatus,
        runner_id: str | None,
        change_id: str,
    ) -> InvocationStatusRecord:
        """One status change, identified by ``change_id``.

        The database layer resends a statement whose reply was lost with the connection.
        If the first one had committed, the resent ``UPDATE`` matches nothing; the row
        then carries this ``change_id``, and the change is reported as done instead of
        as pynenc's error against itself.
        """
        rule = rule_for(status)
        if not (rule.acquires_ownership and runner_id is None):
            params: tuple[Any, ...] = (
                status.value,
                rule.keeps_owner,
                rule.new_owner(runner_id),
                change_id,
                self.app_id,
                invocation_id,
                list(rule.allowed_from),
            )
            if status is InvocationStatus.RUNNING_RECOVERY:
                row = self.db.fetchone(self.sql.recover_running, (*params, self._dead_after()))
            elif rule.overrides_ownership:
                row = self.db.fetchone(self.sql.transition_overriding_owner, params)
            else:
                row = self.db.fetchone(
                    self.sql.transition, (*params, statuses_requiring_owner(), runner_id)
                )
            if row is not None:
                return InvocationStatusRecord(status, row[0], as_utc(row[1]))
        current, current_change = self._status_row(invocation_id)
        if current_change == change_id:
            return current  # this very change committed; its reply was lost
        expected = status_record_transition(current, status, runner_id)  # raises pynenc's error
        if status is InvocationStatus.RUNNING_RECOVERY:
            # RUNNING may move to RUNNING_RECOVERY, so only the owner's heartbeat stopped it.
            raise OwnerAliveError(invocation_id, current, expected, current)
        raise InvocationStatusRaceConditionError(invocation_id, current, expected, current)

    @cached_property
    def _final_statuses(self) -> BoundedCache[str, InvocationStatusRecord]:
        """Final status records this process read: a final status never changes again."""
        return BoundedCache(FINAL_STATUS_CACHE_SIZE)

    def _dead_after(self) -> float:
        """Seconds without a heartbeat after which a runner is dead (pynenc's setting)."""
        return float(self.app.conf.runner_considered_dead_after_minutes) * 60

    @cached_property
    def _spared(self) -> threading.local:
        """Per thread: invocations whose recovery was refused since this thread last looked."""
        return threading.local()

    def _spared_ids(self) -> set[InvocationId]:
        ids: set[InvocationId] | None = getattr(self._spared, "ids", None)
        if ids is None:
            ids = self._spared.ids = set()
        return ids

    def set_invocation_status(
        self,
        invocation_id: InvocationId,
        status: InvocationStatus,
        runner_ctx: RunnerContext,
    ) -> None:
        """pynenc's status change; a recovery whose owner is alive again leaves it alone.

        pynenc's running-invocation recovery lists the invocations of dead runners and
        then moves each to RUNNING_RECOVERY. The move is one statement that checks the
        owner is still dead (:attr:`OrchestratorSql.recover_running`): an owner that
        heartbeats again in between keeps its invocation. The refusal is logged, nothing
        is written, and the reroute that pynenc then asks for is skipped for it.
        """
        try:
            super().set_invocation_status(invocation_id, status, runner_ctx)
        except OwnerAliveError as exc:
            self._spared_ids().add(invocation_id)
            self.app.logger.warning(
                f"invocation:{invocation_id} not recovered: its runner "
                f"{exc.actual_status_record.runner_id} is alive again"
            )
        finally:
            self._status_changed()

    def _status_changed(self) -> None:
        # A status this process changed may change what blocking control answers.
        self._blocking_control.status_changed()

    def reroute_invocations(
        self, invocations_to_reroute: set[InvocationId], runner_ctx: RunnerContext
    ) -> None:
        """pynenc's reroute, except of invocations whose recovery was just refused.

        Those stay RUNNING with their live owner: pynenc's REROUTED transition from
        RUNNING is refused, and is skipped here instead of failing the recovery task.
        """
        spared = self._spared_ids()
        skipped = invocations_to_reroute & spared
        spared.difference_update(skipped)
        for invocation_id in skipped:
            try:
                super().reroute_invocations({invocation_id}, runner_ctx)
            except InvocationStatusError:
                continue  # still RUNNING under its live owner: nothing to reroute
        super().reroute_invocations(invocations_to_reroute - skipped, runner_ctx)

    def get_invocation_status_record(self, invocation_id: InvocationId) -> InvocationStatusRecord:
        known = self._final_statuses.get(invocation_id)
        if known is not None:
            return known
        record = self._status_row(invocation_id)[0]
        if record.status.is_final():
            self._final_statuses.put(invocation_id, record)
        return record

    def _remember_final(self, invocation_id: InvocationId, record: InvocationStatusRecord) -> None:
        self._final_statuses.put(invocation_id, record)

    def _status_row(self, invocation_id: InvocationId) -> tuple[InvocationStatusRecord, str | None]:
        row = self.db.fetchone(self.sql.status_record, (self.app_id, invocation_id))
        if row is None:
            raise KeyError(f"Invocation ID {invocation_id} not found")
        status, owner, set_at, change_id = row
        return InvocationStatusRecord(InvocationStatus(status), owner, as_utc(set_at)), change_id

    def filter_by_status(
        self,
        invocation_ids: list[InvocationId],
        status_filter: frozenset[InvocationStatus],
    ) -> list[InvocationId]:
        if not invocation_ids or not status_filter:
            return []
        rows = self.db.fetchall(
            self.sql.filter_by_status,
            (self.app_id, list(invocation_ids), [s.value for s in status_filter]),
        )
        matched = {row[0] for row in rows}
        return [inv_id for inv_id in invocation_ids if inv_id in matched]

    def increment_invocation_retries(self, invocation_id: InvocationId) -> None:
        """Add one retry; safe to resend: a statement repeated after a lost reply counts once."""
        change_id = uuid.uuid4().hex
        self.db.execute(
            self.sql.increment_retries, (change_id, self.app_id, invocation_id, change_id)
        )

    def get_invocation_retries(self, invocation_id: InvocationId) -> int:
        row = self.db.fetchone(self.sql.get_retries, (self.app_id, invocation_id))
        return int(row[0]) if row else 0

    # -- lookups -------------------------------------------------------------------

    def get_existing_invocations(
        self,
        task: Task[Any, Any],
        key_serialized_arguments: dict[str, str] | None = None,
        statuses: list[InvocationStatus] | None = None,
    ) -> Iterator[InvocationId]:
        """Invocations of ``task`` with all of these (indexed) arguments, in these statuses."""
        sql, task_key = self.sql, task.task_id.key
        status_values = [s.value for s in statuses] if statuses else None
        if key_serialized_arguments:
            names = list(key_serialized_arguments)
            matching: tuple[Any, ...] = (
                names,
                [key_serialized_arguments[name] for name in names],
                self.app_id,
                len(names),
            )
            if status_values:
                return self._ids(
                    sql.existing_by_arguments_and_status,
                    (self.app_id, task_key, status_values, *matching),
                )
            return self._ids(sql.existing_by_arguments, (self.app_id, task_key, *matching))
        if status_values:
            return self._ids(
                sql.existing_by_task_and_status, (self.app_id, task_key, status_values)
            )
        return self._ids(sql.existing_by_task, (self.app_id, task_key))

    def get_task_invocation_ids(self, task_id: TaskId) -> Iterator[InvocationId]:
        return self._ids(self.sql.existing_by_task, (self.app_id, task_id.key))

    def get_call_invocation_ids(self, call_id: CallId) -> Iterator[InvocationId]:
        return self._ids(self.sql.invocations_of_call, (self.app_id, call_id.key))

    def _filters(
        self, task_id: TaskId | None, statuses: list[InvocationStatus] | None
    ) -> tuple[Any, ...]:
        params: tuple[Any, ...] = (self.app_id,)
        if task_id:
            params += (task_id.key,)
        if statuses:
            params += ([s.value for s in statuses],)
        return params

    def get_invocation_ids_paginated(
        self,
        task_id: TaskId | None = None,
        statuses: list[InvocationStatus] | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[InvocationId]:
        """Invocation ids, newest registration first."""
        query = self.sql.paginated.pick(bool(task_id), bool(statuses))
        rows = self.db.fetchall(query, (*self._filters(task_id, statuses), limit, offset))
        return [InvocationId(row[0]) for row in rows]

    def count_invocations(
        self,
        task_id: TaskId | None = None,
        statuses: list[InvocationStatus] | None = None,
    ) -> int:
        query = self.sql.count.pick(bool(task_id), bool(statuses))
        row = self.db.fetchone(query, self._filters(task_id, statuses))
        return int(row[0]) if row else 0

    def index_arguments_for_concurrency_control(
        self, invocation: DistributedInvocation[Any, Any]
    ) -> None:
        arguments = invocation.call.serialized_arguments
        if not arguments:
            return
        names = sorted(arguments)
        self.db.execute(
            self.sql.index_arguments,
            (self.app_id, invocation.invocation_id, names, [arguments[n] for n in names]),
        )

    # -- purge ---------------------------------------------------------------------

    def set_up_invocation_auto_purge(self, invocation_id: InvocationId) -> None:
        self.db.execute(self.sql.set_purgeable, (self.app_id, invocation_id))

    def auto_purge(self) -> None:
        """Remove the invocations set up for auto purge (``set_up_invocation_auto_purge``,
        which pynenc calls when an invocation reaches a final status) more than
        ``auto_final_invocation_purge_hours`` ago.

        pynenc 0.4 never calls it; a caller gets the one purge of
        :mod:`pynenc_postgres.retention`, which removes them from every table, not only
        the orchestrator's, and records the run.
        """
        hours = float(self.conf.auto_final_invocation_purge_hours)
        run_purge(
            self.settings,
            self.app_id,
            [Scope((), timedelta(hours=hours), marked=True)],
            policy=f"auto_purge: set up for auto purge more than {hours:g}h ago",
            runner_dead_after=timedelta(seconds=self._dead_after()),
        )

    def purge(self) -> None:
        """Delete this app's orchestrator and retention rows, and nothing else, in one
        transaction."""
        purge_app(self.db, self.settings.schema, self.app_id, ORCHESTRATOR_PURGED_TABLES)
        self._final_statuses.clear()
        self._heartbeats.forget()
        self._blocking_control.changed()

    # -- runners and recovery ------------------------------------------------------

    def register_runner_heartbeats(
        self,
        runner_ids: list[str],
        can_run_atomic_service: bool = False,
        consumed_queues: Sequence[str] | None = None,
    ) -> None:
        """Record a heartbeat, stamped by the server's clock, for each runner.

        Skipped when this process wrote the same runners' heartbeats, with the same
        flag and queues, less than ``postgres_heartbeat_interval_sec`` ago (at most a
        sixth of ``runner_considered_dead_after_minutes``).
        """
        if not runner_ids:
            return
        ids = sorted(set(runner_ids))
        queues = tuple(consumed_queues) if consumed_queues is not None else None
        flag = bool(can_run_atomic_service)
        interval = heartbeat_interval(
            float(self.conf.postgres_heartbeat_interval_sec), self._dead_after()
        )
        # Sends nothing unless this process's next look at the schedule is due.
        self.retention.maybe_run(ids[0])
        if not self._heartbeats.due(ids, flag, queues, interval):
            return
        started = time.monotonic()
        as_list = list(queues) if queues is not None else None
        self.db.execute(self.sql.register_heartbeats, (self.app_id, flag, as_list, ids, as_list))
        self._heartbeats.written(ids, flag, queues, started)

    @cached_property
    def _heartbeats(self) -> HeartbeatThrottle:
        return HeartbeatThrottle()

    @cached_property
    def retention(self) -> RetentionSchedule:
        """The app's retention schedule as this process sees it (runners apply it).

        :raises PostgresConfigError: a retention setting cannot be read.
        """
        policy = RetentionPolicy.parse(
            str(self.conf.postgres_retention),
            str(self.conf.postgres_retention_by_status),
            str(self.conf.postgres_retention_interval),
        )
        return RetentionSchedule(
            self.settings,
            self.app_id,
            policy,
            runner_dead_after=timedelta(seconds=self._dead_after()),
            batch_size=int(self.conf.postgres_retention_batch_size),
            lock_timeout_ms=int(self.conf.postgres_retention_lock_timeout_ms),
        )

    def _get_active_runners(
        self, timeout_seconds: float, can_run_atomic_service: bool | None = None
    ) -> list[ActiveRunnerInfo]:
        """Runners whose last heartbeat is younger than the timeout, by the server's clock."""
        if can_run_atomic_service is None:
            rows = self.db.fetchall(self.sql.active_runners, (self.app_id, float(timeout_seconds)))
        else:
            rows = self.db.fetchall(
                self.sql.active_runners_by_eligibility,
                (self.app_id, float(timeout_seconds), can_run_atomic_service),
            )
        return [
            ActiveRunnerInfo(
                runner_id=runner_id,
                creation_time=as_utc(first),
                last_heartbeat=as_utc(last),
                allow_to_run_atomic_service=allowed,
                consumed_queues=tuple(queues),
            )
            for runner_id, first, last, allowed, queues in rows
        ]

    def get_pending_invocations_for_recovery(self) -> Iterator[InvocationId]:
        """PENDING invocations older than ``max_pending_seconds`` by the server's clock.

        pynenc's pending-recovery task calls this. Before answering, it routes again the
        invocations that a worker took from the queue and never moved to PENDING, because
        it died in between: still runnable, taken longer than ``max_pending_seconds`` ago
        (the claim's ``taken_at`` stamp). Neither of pynenc's recovery tasks would find them.
        """
        seconds = float(self.app.conf.max_pending_seconds)
        self.route_stranded_invocations(seconds)
        return self._ids(self.sql.pending_for_recovery, (self.app_id, seconds))

    def route_stranded_invocations(self, older_than_seconds: float) -> list[InvocationId]:
        """Route again what was taken from the queue and left runnable; return those ids.

        Needs the queue in this database, so it acts only when the broker is
        :class:`~pynenc_postgres.broker.PostgresBroker` on the same database and schema.
        A copy routed while a slow worker still holds the first one is harmless: only
        one of them can move the invocation to PENDING, the other finds it taken.
        """
        broker = self.app.broker
        if not (
            isinstance(broker, PostgresBroker)
            and (broker.settings.url, broker.settings.schema)
            == (self.settings.url, self.settings.schema)
        ):
            return []
        params = (self.app_id, list(RUNNABLE_STATUSES), older_than_seconds)
        found = self.db.fetchall(self.sql.stranded_for_recovery, params)
        if not found:
            return []
        routes = []
        per_queue: dict[str, int] = {}
        for invocation_id, _ in found:
            task = self.app.state_backend.get_invocation(invocation_id).task
            routes.append((task.broker_queue, float(task.broker_priority)))
            per_queue[task.broker_queue] = per_queue.get(task.broker_queue, 0) + 1
        broker._validate_queue_names(tuple(per_queue))
        payloads = sorted(
            route_payload(broker.wake_key(self.app_id, queue), count)
            for queue, count in per_queue.items()
        )
        rows = self.db.fetchall(
            self.sql.route_stranded,
            (
                [row[0] for row in found],
                [row[1] for row in found],
                [queue for queue, _ in routes],
                [priority for _, priority in routes],
                self.app_id,
                list(RUNNABLE_STATUSES),
                self.app_id,
                broker.sql.channel,
                payloads,
            ),
        )
        stranded = [InvocationId(row[0]) for row in rows]
        if stranded:
            self.app.logger.warning(
                f"Routing again {len(stranded)} invocation(s) taken from the queue by a "
                f"worker that stopped before running them: {', '.join(stranded)}"
            )
        return stranded

    def _get_running_invocations_for_recovery(
        self, timeout_seconds: float
    ) -> Iterator[InvocationId]:
        """RUNNING invocations whose owner has no heartbeat within the timeout (server clock)."""
        return self._ids(self.sql.running_for_recovery, (self.app_id, float(timeout_seconds)))

    # -- atomic service ------------------------------------------------------------

    def record_atomic_service_execution_start(
        self,
        atomic_service_run: AtomicServiceRun,
        started_at: datetime | None,
        status: AtomicServiceExecutionStatus = AtomicServiceExecutionStatus.RUNNING,
        reason: str = "",
    ) -> bool:
        """Record an attempt; for RUNNING, take the cluster-wide slot or record BLOCKED.

        In one transaction: a RUNNING holder whose runner is dead by pynenc's rule (no
        heartbeat, nor its own start, within ``runner_considered_dead_after_minutes``
        by the server's clock) is marked ABANDONED; then the start is inserted, and
        the partial unique index lets at most one RUNNING row exist per app.
        """
        run_id = atomic_service_run.atomic_service_id.atomic_service_run_id
        runner_id = atomic_service_run.atomic_service_id.runner_id
        start = as_utc(started_at) if started_at is not None else None
        if status != AtomicServiceExecutionStatus.RUNNING:
            self._record_execution(atomic_service_run, start, status.value, reason)
            self.purge_atomic_service_executions()
            return bool(status != AtomicServiceExecutionStatus.BLOCKED)
        dead_after = float(self.app.conf.runner_considered_dead_after_minutes) * 60
        sql = self.sql

        def claim(conn: psycopg.Connection[Any]) -> tuple[datetime | None, tuple[Any, ...] | None]:
            conn.execute(sql.abandon_dead_holder, (dead_after, self.app_id, dead_after))
            row = conn.execute(
                sql.start_running_execution, (self.app_id, run_id, runner_id, reason, start)
            ).fetchone()
            if row is not None:
                return row[0], None
            return None, conn.execute(sql.running_execution, (self.app_id,)).fetchone()

        started, holder = self.db.run(claim, transaction=True)
        if started is not None:
            atomic_service_run.started_at = as_utc(started)
            return True
        if holder is not None and holder[0] == run_id:
            return True  # this run already holds the slot: a resent start
        prior = f"prior_running:{holder[0]} runner:{holder[1]}" if holder else "prior_running"
        self._record_execution(atomic_service_run, start, _BLOCKED, reason or prior)
        self.purge_atomic_service_executions()
        return False

    def _record_execution(
        self, run: AtomicServiceRun, start: datetime | None, status: str, reason: str
    ) -> None:
        row = self.db.fetchone(
            self.sql.record_execution,
            (
                start,
                self.app_id,
                run.atomic_service_id.atomic_service_run_id,
                run.atomic_service_id.runner_id,
                status,
                reason,
                status == _BLOCKED,
            ),
        )
        if row is not None:
            run.started_at = as_utc(row[0])

    def finalize_atomic_service_execution(
        self,
        atomic_service_run: AtomicServiceRun,
        end_time: datetime,
        status: AtomicServiceExecutionStatus,
        reason: str = "",
    ) -> None:
        """End a RUNNING execution; the first terminal status wins (idempotent)."""
        run_id = atomic_service_run.atomic_service_id.atomic_service_run_id
        end = as_utc(end_time)
        self.db.execute(
            self.sql.finalize_execution,
            (
                end,
                status.value,
                reason,
                reason,
                self.app_id,
                run_id,
                self.app_id,
                run_id,
                atomic_service_run.atomic_service_id.runner_id,
                status.value,
                reason,
                end,
                end,
            ),
        )
        self.purge_atomic_service_executions()

    def get_active_atomic_service_executions(self) -> list[AtomicServiceExecution]:
        rows = self.db.fetchall(self.sql.active_executions, (self.app_id,))
        return [_execution(row) for row in rows]

    def get_atomic_service_executions_in_timerange(
        self,
        start_time: datetime,
        end_time: datetime,
        limit: int = 1000,
        *,
        runner_id: str | None = None,
        min_duration_seconds: float = 0.0,
    ) -> list[AtomicServiceExecution]:
        min_duration = float(min_duration_seconds)
        rows = self.db.fetchall(
            self.sql.executions_in_timerange,
            (
                self.app_id,
                as_utc(end_time),
                as_utc(start_time),
                runner_id,
                runner_id,
                min_duration,
                min_duration,
                max(limit, 0),
            ),
        )
        return [_execution(row) for row in rows]

    def purge_atomic_service_executions(self) -> int:
        """Trim finished executions by age and count; RUNNING ones and the ones that
        trigger runs reference are kept."""
        retention_seconds = float(self.app.conf.atomic_service_execution_retention_minutes) * 60
        max_records = int(self.app.conf.atomic_service_execution_max_records)
        protected = sorted(self.app.trigger.get_referenced_atomic_service_run_ids())
        sql = self.sql

        def op(conn: psycopg.Connection[Any]) -> int:
            removed = 0
            if retention_seconds > 0:
                removed += conn.execute(
                    sql.purge_aged_executions, (self.app_id, retention_seconds, protected)
                ).rowcount
            if max_records > 0:
                removed += conn.execute(
                    sql.purge_excess_executions,
                    (self.app_id, self.app_id, protected, max_records),
                ).rowcount
            return removed

        return self.db.run(op, transaction=True)


def _execution(row: tuple[Any, ...]) -> AtomicServiceExecution:
    runner_id, run_id, start, end, status, reason = row
    return AtomicServiceExecution.from_raw(
        runner_id=runner_id,
        atomic_service_run_id=run_id,
        start_time=as_utc(start),
        end_time=as_utc(end) if end is not None else None,
        status=AtomicServiceExecutionStatus(status),
        reason=reason,
    )
