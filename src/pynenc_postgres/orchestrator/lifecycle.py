"""An invocation's life in as few round trips as its guarantees allow.

pynenc's orchestrator composes each step of an invocation from calls to several
components: a registration is an invocation upsert, an orchestrator row, a history row
per invocation, a trigger lookup per invocation and a route; a status change is the
change, then ``purgeable_since`` and the release of waiters for a final status, then a
history row, then a trigger lookup. With the state backend in the same database and
schema as the orchestrator (same settings), :class:`CombinedLifecycle` sends each step as
one statement (:mod:`pynenc_postgres.orchestrator.lifecycle_sql`); with any other state
backend it leaves every step to pynenc, unchanged.

What each combined step keeps:

- **One winner.** The status change is the same conditional ``UPDATE`` as
  ``_atomic_status_transition``; the other writes of the statement read its ``RETURNING``
  row, so only the winner writes history, results or routes.
- **Safe to resend.** Each step carries a ``status_change_id``: a statement resent after
  a lost reply matches nothing, finds its own id on the row and is reported as done;
  everything else it wrote committed with that change.
- **Results read with their status.** Waiting for a group reads the final statuses among
  its invocations and their (small) results in one statement per poll.
- **Trigger conditions seen at once.** Each statement reports whether the task has
  trigger conditions sourced from it; pynenc's trigger is called only when it has (or
  when the trigger is not :class:`~pynenc_postgres.trigger.PostgresTrigger` of this
  database), so a condition that another host registers is seen by the next statement.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pynenc import context
from pynenc.conf.config_broker import validate_priority
from pynenc.conf.config_task import ConcurrencyControlType
from pynenc.exceptions import (
    InvocationNotFoundError,
    InvocationStatusError,
    InvocationStatusRaceConditionError,
    TaskParallelProcessingError,
)
from pynenc.invocation.dist_invocation import DistributedInvocation
from pynenc.invocation.status import (
    InvocationStatus,
    InvocationStatusRecord,
    status_record_transition,
)
from pynenc.orchestrator.base_orchestrator import BaseOrchestrator

from pynenc_postgres.broker import PostgresBroker
from pynenc_postgres.db.component import DatabaseComponent
from pynenc_postgres.db.notify import notify_payload
from pynenc_postgres.db.values import as_utc
from pynenc_postgres.orchestrator.lifecycle_sql import (
    LifecycleSql,
    TransitionKind,
    lifecycle_statements,
)
from pynenc_postgres.orchestrator.transitions import rule_for, statuses_requiring_owner
from pynenc_postgres.state_backend import PostgresStateBackend
from pynenc_postgres.trigger import PostgresTrigger

if TYPE_CHECKING:
    from pynenc.call import Call, PreSerializedCall
    from pynenc.identifiers.invocation_id import InvocationId
    from pynenc.runner.runner_context import RunnerContext

_PENDING = rule_for(InvocationStatus.PENDING)
_FINAL = sorted(s.value for s in InvocationStatus.get_final_statuses())
# Results up to this size are read with the final status that announces them.
PREFETCHED_RESULT_BYTES = 64 * 1024
_RUNNABLE = [s.value for s in InvocationStatus if s.is_available_for_run()]


class CombinedLifecycle(DatabaseComponent, BaseOrchestrator):
    """pynenc's composite orchestrator steps, each as one statement when all is in one database.

    Mixed into :class:`~pynenc_postgres.orchestrator.PostgresOrchestrator`; every
    override falls back to pynenc's own step when the state backend is not a
    :class:`~pynenc_postgres.state_backend.PostgresStateBackend` with the same settings.
    """

    def _status_row(self, invocation_id: InvocationId) -> tuple[InvocationStatusRecord, str | None]:
        raise NotImplementedError

    def _status_changed(self) -> None:
        """Called after each status change this process made (blocking control listens)."""

    # -- which components share this database ---------------------------------------

    def _combined_backend(self) -> PostgresStateBackend | None:
        """The state backend, when its tables are in this database and schema."""
        backend = self.app.state_backend
        if isinstance(backend, PostgresStateBackend) and backend.settings == self.settings:
            return backend
        return None

    def _combined_broker(self) -> PostgresBroker | None:
        """The broker, when its queue is in this database and schema."""
        broker = self.app.broker
        if isinstance(broker, PostgresBroker) and broker.settings == self.settings:
            return broker
        return None

    def _trigger_reads_here(self) -> bool:
        """The trigger keeps its conditions in this database: the statements can tell."""
        trigger = self.app.trigger
        return isinstance(trigger, PostgresTrigger) and trigger.settings == self.settings

    @property
    def _lifecycle_sql(self) -> LifecycleSql:
        return lifecycle_statements(self.settings.schema)

    # -- registration ---------------------------------------------------------------

    def route_calls(
        self, calls: list[PreSerializedCall[Any, Any]]
    ) -> list[DistributedInvocation[Any, Any]]:
        """Route a batch of calls: one statement per batch, whatever its size."""
        backend = self._combined_backend()
        if backend is None or not calls:
            result: list[DistributedInvocation[Any, Any]] = super().route_calls(calls)
            return result
        if calls[0].task.conf.registration_concurrency != ConcurrencyControlType.DISABLED:
            raise TaskParallelProcessingError(
                calls[0].task.task_id,
                "Batch processing is only supported with ConcurrencyControlType.DISABLED",
            )
        parent = context.get_dist_invocation_context(self.app.app_id)
        with backend.written_by_registration():
            invocations = [DistributedInvocation.from_parent(call, parent) for call in calls]
        self.register_new_invocations(invocations)
        return invocations

    def _route_new_call_invocation(
        self, call: Call[Any, Any], runner_id: str | None = None
    ) -> DistributedInvocation[Any, Any]:
        backend = self._combined_backend()
        if backend is None:
            routed: DistributedInvocation[Any, Any] = super()._route_new_call_invocation(
                call, runner_id
            )
            return routed
        with backend.written_by_registration():
            invocation = DistributedInvocation.from_parent(
                call,
                parent_invocation=context.get_dist_invocation_context(self.app.app_id),
                parent_event_id=context.get_trigger_event_context(self.app.app_id),
            )
        self.register_new_invocations([invocation])
        if (
            call.task.conf.registration_concurrency != ConcurrencyControlType.DISABLED
            or call.task.conf.running_concurrency != ConcurrencyControlType.DISABLED
        ):
            self.index_arguments_for_concurrency_control(invocation)
        if self.app.logger.isEnabledFor(logging.INFO):
            self.app.logger.info(f"invocation:{invocation.invocation_id} ROUTED")
        return invocation

    def register_new_invocations(self, invocations: list[DistributedInvocation[Any, Any]]) -> None:
        """Store, register, record and route the invocations in one statement.

        Already registered invocations keep their status and are routed again, as with
        pynenc's own registration.
        """
        backend = self._combined_backend()
        if backend is None or not invocations:
            super().register_new_invocations(invocations)
            return
        runner_ctx = context.get_or_create_runner_context(self.app.app_id)
        runner_id = runner_ctx.runner_id
        backend.store_runner_context(runner_ctx)
        broker = self._combined_broker()
        # One row per id: a statement cannot write the same row twice.
        unique = list({inv.invocation_id: inv for inv in invocations}.values())
        rows: list[tuple[Any, ...]] = []
        # A task's queue and priority are config lookups (the priority validated on each
        # read): read once per task of the batch, not once per invocation.
        route_of: dict[int, tuple[str, float]] = {}
        for inv in unique:
            call = inv.call
            call_id = call.call_id
            workflow = inv.workflow
            task = call.task
            route = route_of.get(id(task))
            if route is None:
                route = route_of[id(task)] = (task.broker_queue, float(task.broker_priority))
            rows.append(
                (
                    inv.invocation_id,
                    call_id.task_id.key,
                    call_id.key,
                    call_id.args_id,
                    json.dumps(call.serialized_arguments),
                    inv.parent_invocation_id,
                    inv.parent_event_id,
                    workflow.workflow_id if workflow else None,
                    workflow.workflow_type.key if workflow else None,
                    workflow.parent_workflow_id if workflow else None,
                    route[0],
                    route[1],
                )
            )
        params: dict[str, Any] = {
            "rows": json.dumps(rows),
            "app": self.app_id,
            "runner": runner_id,
            "ctx": runner_ctx.runner_id,
            "recorded": datetime.now(UTC),
        }
        sql = self._lifecycle_sql
        if broker is not None:
            queues = sorted({queue for queue, _ in route_of.values()})
            # pynenc's checks of a route, before anything is written.
            broker._validate_queue_names(queues)
            for priority in {priority for _, priority in route_of.values()}:
                validate_priority(priority, label="Broker priority")
            params["channel"] = broker.sql.channel
            params["payloads"] = sorted(
                notify_payload(broker.wake_key(self.app_id, queue)) for queue in queues
            )
            query = sql.register_and_route
        else:
            query = sql.register
        row = self.db.fetchone(query, params)
        assert row is not None
        status_record = InvocationStatusRecord(
            InvocationStatus.REGISTERED, runner_id, as_utc(row[0])
        )
        watched = set(row[1])
        everything = not self._trigger_reads_here()
        reported = [
            inv.invocation_id
            for inv in unique
            if everything or inv.call.task.task_id.key in watched
        ]
        if reported:
            self.app.trigger.report_tasks_status(reported, status_record.status)
        if broker is None:
            self.route_invocations(invocations)
        if self.app.logger.isEnabledFor(logging.INFO):
            for inv in invocations:
                self.app.logger.info(
                    f"NEW task:{inv.call.task.task_id.key} invocation:{inv.invocation_id} "
                    "REGISTERED and ROUTED"
                )

    # -- status changes -------------------------------------------------------------

    def set_invocation_status(
        self,
        invocation_id: InvocationId,
        status: InvocationStatus,
        runner_ctx: RunnerContext,
    ) -> None:
        """The status change, its history row and, for a final status, ``purgeable_since``
        and the release of waiters, in one statement.

        A move to RUNNING_RECOVERY takes pynenc's own path: its transition checks, in the
        moving statement, that the owner is still dead, and recoveries are rare.
        """
        backend = self._combined_backend()
        if backend is None or status is InvocationStatus.RUNNING_RECOVERY:
            super().set_invocation_status(invocation_id, status, runner_ctx)
            return
        self._combined_change(backend, invocation_id, status, runner_ctx, {})

    def set_invocation_result(
        self,
        invocation: DistributedInvocation[Any, Any],
        result: Any,
        runner_ctx: RunnerContext,
    ) -> None:
        """SUCCESS with its result, history, ``purgeable_since`` and released waiters.

        The result is stored by the statement that moves the invocation to SUCCESS, so a
        runner that lost the invocation (another one recovered it) stores nothing.
        """
        backend = self._combined_backend()
        if backend is None:
            super().set_invocation_result(invocation, result, runner_ctx)
            return
        serialized = self.app.client_data_store.serialize(result)
        watched = self._combined_change(
            backend,
            invocation.invocation_id,
            InvocationStatus.SUCCESS,
            runner_ctx,
            {"result": serialized},
            stores="result",
        )
        if watched:
            self.app.trigger.report_invocation_result(invocation, result)

    def set_invocation_exception(
        self,
        invocation: DistributedInvocation[Any, Any],
        exception: Exception,
        runner_ctx: RunnerContext,
    ) -> None:
        """FAILED with its exception, history, ``purgeable_since`` and released waiters."""
        backend = self._combined_backend()
        if backend is None:
            super().set_invocation_exception(invocation, exception, runner_ctx)
            return
        serialized = backend.serialize_exception(exception)
        error_name, is_pynenc_error = _exception_summary(serialized)
        watched = self._combined_change(
            backend,
            invocation.invocation_id,
            InvocationStatus.FAILED,
            runner_ctx,
            {"exception": serialized, "error_name": error_name, "is_pynenc_error": is_pynenc_error},
            stores="exception",
        )
        if watched:
            self.app.trigger.report_invocation_failure(invocation, exception)

    def set_invocation_retry(
        self,
        invocation: DistributedInvocation[Any, Any],
        exception: Exception,
        runner_ctx: RunnerContext,
    ) -> None:
        """RETRY, one more retry counted and the invocation routed again, in one statement."""
        backend = self._combined_backend()
        if backend is None:
            super().set_invocation_retry(invocation, exception, runner_ctx)
            return
        broker = self._combined_broker()
        extra: dict[str, Any] = {}
        if broker is not None:
            queue = invocation.task.broker_queue
            broker._validate_queue_names((queue,))
            validate_priority(invocation.task.broker_priority, label="Broker priority")
            extra = {
                "queue": queue,
                "priority": float(invocation.task.broker_priority),
                "channel": broker.sql.channel,
                "payload": notify_payload(broker.wake_key(self.app_id, queue)),
            }
        self._combined_change(
            backend,
            invocation.invocation_id,
            InvocationStatus.RETRY,
            runner_ctx,
            extra,
            retry=True,
            routes=broker is not None,
        )
        if broker is None:
            self.route_invocation(invocation)

    def _combined_change(
        self,
        backend: PostgresStateBackend,
        invocation_id: InvocationId,
        status: InvocationStatus,
        runner_ctx: RunnerContext,
        extra: dict[str, Any],
        *,
        stores: str = "",
        retry: bool = False,
        routes: bool = False,
    ) -> bool:
        """One combined status change; reports it to the trigger when conditions watch it.

        :return: whether trigger conditions watch the invocation's task (True when the
            statements cannot tell: the trigger is elsewhere).
        :raises InvocationStatusTransitionError: the current status cannot move there.
        :raises InvocationStatusOwnershipError: the caller does not own the invocation.
        :raises InvocationStatusRaceConditionError: the row changed again meanwhile.
        :raises KeyError: the invocation is not registered.
        """
        rule = rule_for(status)
        runner_id = runner_ctx.runner_id
        backend.store_runner_context(runner_ctx)
        change_id = uuid.uuid4().hex
        watched: bool | None = None
        row = None
        if not (rule.acquires_ownership and runner_id is None):
            kind = TransitionKind(
                owner_check=not rule.overrides_ownership,
                final=status.is_final(),
                stores=stores,
                retry=retry,
                routes=routes,
            )
            params = {
                "app": self.app_id,
                "id": invocation_id,
                "status": status.value,
                "keeps": rule.keeps_owner,
                "owner": rule.new_owner(runner_id),
                "change": change_id,
                "from": list(rule.allowed_from),
                "required": statuses_requiring_owner(),
                "runner": runner_id,
                "recorded": datetime.now(UTC),
                "ctx": runner_ctx.runner_id,
                **extra,
            }
            row = self.db.fetchone(self._lifecycle_sql.transition(kind), params)
        if row is not None:
            watched = bool(row[2])
        else:
            current, current_change = self._status_row(invocation_id)
            if current_change != change_id:
                expected = status_record_transition(current, status, runner_id)  # pynenc's error
                raise InvocationStatusRaceConditionError(invocation_id, current, expected, current)
            # This very change committed, with everything it wrote; its reply was lost.
        if watched or watched is None or not self._trigger_reads_here():
            self.app.trigger.report_tasks_status([invocation_id], status)
            watched = True
        self._status_changed()
        self.app.logger.info(f"invocation:{invocation_id} status:{status.value}")
        return watched

    # -- results -----------------------------------------------------------------------

    def filter_final(self, invocation_ids: list[InvocationId]) -> list[InvocationId]:
        """The final ones among ``invocation_ids``, reading their results in the same statement.

        pynenc reads each final invocation's status and result next: the statuses are
        kept (a final status never changes) and small results are handed to the state
        backend for that read, so waiting for a group costs one statement per poll.
        """
        backend = self._combined_backend()
        if backend is None or not invocation_ids:
            final: list[InvocationId] = super().filter_final(invocation_ids)
            return final
        rows = self.db.fetchall(
            self._lifecycle_sql.final_with_results,
            {
                "app": self.app_id,
                "ids": list(invocation_ids),
                "finals": _FINAL,
                "max_bytes": PREFETCHED_RESULT_BYTES,
            },
        )
        for invocation_id, status, owner, set_at, result in rows:
            self._remember_final(
                invocation_id,
                InvocationStatusRecord(InvocationStatus(status), owner, as_utc(set_at)),
            )
            if result is not None:
                backend.prefetch_result(invocation_id, result)
        matched = {row[0] for row in rows}
        return [inv_id for inv_id in invocation_ids if inv_id in matched]

    def _remember_final(self, invocation_id: InvocationId, record: InvocationStatusRecord) -> None:
        raise NotImplementedError

    # -- taking invocations to run ------------------------------------------------------

    def get_additional_invocations_to_run(
        self,
        missing_invocations: int,
        blocking_invocation_ids: set[InvocationId],
        invocations_to_reroute: set[InvocationId],
        runner_ctx: RunnerContext,
        queue_provider: Callable[[], Sequence[str]],
        on_queue_retrieved: Callable[[str], None],
    ) -> Iterator[DistributedInvocation[Any, Any]]:
        """pynenc's loop, with the status read, the invocation read, the PENDING change and
        its history in one statement after each take from the queue.

        The PENDING change is made in that statement only for tasks this process knows
        to run without concurrency control; for the others the statement reads, pynenc's
        concurrency check decides, and the change follows as a separate statement, as in
        pynenc.
        """
        backend = self._combined_backend()
        if backend is None:
            yield from super().get_additional_invocations_to_run(
                missing_invocations,
                blocking_invocation_ids,
                invocations_to_reroute,
                runner_ctx,
                queue_provider,
                on_queue_retrieved,
            )
            return
        broker = self._combined_broker()
        while missing_invocations > 0:
            retrieved_invocation = False
            for queue_name in queue_provider():
                change_id = uuid.uuid4().hex
                params = self._take_params(backend, runner_ctx, change_id)
                row: tuple[Any, ...] | None
                if broker is not None:
                    row = self._claim_and_take(broker, queue_name, params)
                    invocation_id = row[0] if row is not None else None
                else:
                    invocation_id = self.app.broker.retrieve_invocation(queue_name)
                    row = None
                if not invocation_id:
                    continue
                retrieved_invocation = True
                on_queue_retrieved(queue_name)
                if invocation_id not in blocking_invocation_ids:
                    if row is None:
                        row = self.db.fetchone(
                            self._lifecycle_sql.take, {**params, "id": invocation_id}
                        )
                    taken = self._taken(backend, invocation_id, row, change_id)
                    if taken is None:
                        break  # not runnable any more: another copy ran it, or will
                    invocation, pending = taken
                    if not pending:
                        if not self.is_candidate_to_run_by_concurrency_control(invocation):
                            if invocation.task.conf.reroute_on_concurrency_control:
                                self.set_invocation_status(
                                    invocation_id,
                                    InvocationStatus.CONCURRENCY_CONTROLLED,
                                    runner_ctx,
                                )
                                invocations_to_reroute.add(invocation_id)
                            else:
                                self.set_invocation_status(
                                    invocation_id,
                                    InvocationStatus.CONCURRENCY_CONTROLLED_FINAL,
                                    runner_ctx,
                                )
                            break
                        try:
                            self.set_invocation_status(
                                invocation_id, InvocationStatus.PENDING, runner_ctx
                            )
                        except InvocationStatusError as ex:
                            self.app.logger.warning(
                                f"Could not set invocation:{invocation_id} to status:pending: {ex}"
                            )
                            break
                    missing_invocations -= 1
                    yield invocation
                break
            if not retrieved_invocation:
                break

    def _take_params(
        self, backend: PostgresStateBackend, runner_ctx: RunnerContext, change_id: str
    ) -> dict[str, Any]:
        backend.store_runner_context(runner_ctx)
        return {
            "app": self.app_id,
            "runner": runner_ctx.runner_id,
            "change": change_id,
            "from": list(_PENDING.allowed_from),
            "required": statuses_requiring_owner(),
            "free_tasks": self._tasks_free_of_concurrency_control(),
            "recorded": datetime.now(UTC),
            "ctx": runner_ctx.runner_id,
        }

    def _claim_and_take(
        self, broker: PostgresBroker, queue_name: str, params: dict[str, Any]
    ) -> tuple[Any, ...] | None:
        """The broker's wait for work, with a claim that also takes the invocation."""
        commit = broker.claim_synchronous_commit()
        sql = self._lifecycle_sql
        query = sql.claim_and_take_relaxed if commit else sql.claim_and_take
        claim_params = {**params, "queue": queue_name, "commit": commit}

        def claim() -> tuple[Any, ...] | None:
            claim_params["recorded"] = datetime.now(UTC)
            return self.db.fetchone(query, claim_params)

        return broker.retrieve_with(queue_name, claim)

    def _taken(
        self,
        backend: PostgresStateBackend,
        invocation_id: InvocationId,
        row: tuple[Any, ...] | None,
        change_id: str,
    ) -> tuple[DistributedInvocation[Any, Any], bool] | None:
        """The invocation a take read, and whether the take moved it to PENDING.

        None when its status does not allow a run.

        :raises KeyError: the invocation is not registered.
        :raises InvocationNotFoundError: the state backend has no row for it.
        """
        if row is None or row[1] is None:
            raise KeyError(f"Invocation ID {invocation_id} not found")
        status, current_change, pending_at = InvocationStatus(row[1]), row[2], row[4]
        if pending_at is None:
            if status == InvocationStatus.PENDING and current_change == change_id:
                pending_at = row[3]  # a resent take whose first attempt committed
            elif not status.is_available_for_run():
                return None
        if row[5] is None:
            raise InvocationNotFoundError(invocation_id, "The invocation wasn't stored")
        invocation = backend.invocation_from_row(invocation_id, row[5:12])
        if pending_at is None:
            return invocation, False
        if row[12] or not self._trigger_reads_here():
            self.app.trigger.report_tasks_status([invocation_id], InvocationStatus.PENDING)
        self.app.logger.info(f"invocation:{invocation_id} status:pending")
        return invocation, True

    def _tasks_free_of_concurrency_control(self) -> list[str]:
        """Keys of this app's known tasks that run without a concurrency check."""
        tasks = self.app._tasks
        cached = self.__dict__.get("_free_tasks")
        if cached is not None and cached[0] == len(tasks):
            free: list[str] = cached[1]
            return free
        free = sorted(
            task_id.key
            for task_id, task in list(tasks.items())
            if task.conf.running_concurrency == ConcurrencyControlType.DISABLED
        )
        self.__dict__["_free_tasks"] = (len(tasks), free)
        return free


def _exception_summary(serialized_exception: str) -> tuple[str, bool]:
    try:
        document = json.loads(serialized_exception)
        return str(document.get("error_name") or "unknown"), bool(document.get("pynenc_error"))
    except (ValueError, AttributeError):
        return "unknown", False
