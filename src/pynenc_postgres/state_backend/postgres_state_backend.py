"""PostgresStateBackend: pynenc's state in PostgreSQL, one statement per call."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pynenc.app_info import AppInfo
from pynenc.identifiers.call_id import CallId
from pynenc.identifiers.invocation_id import InvocationId
from pynenc.identifiers.task_id import TaskId
from pynenc.invocation.status import InvocationStatus, InvocationStatusRecord
from pynenc.models.call_dto import CallDTO
from pynenc.models.invocation_dto import InvocationDTO
from pynenc.runner.runner_context import RunnerContext
from pynenc.state_backend.base_state_backend import BaseStateBackend, InvocationHistory
from pynenc.types import Params, Result
from pynenc.workflow.workflow_identity import WorkflowIdentity

from pynenc_postgres.conf import ConfigStateBackendPostgres
from pynenc_postgres.db import borrowed, tables
from pynenc_postgres.db.cache import BoundedCache
from pynenc_postgres.db.component import DatabaseComponent
from pynenc_postgres.db.engine import get_database
from pynenc_postgres.db.settings import DatabaseSettings
from pynenc_postgres.db.sql import escape_like
from pynenc_postgres.db.urls import restore_secrets, strip_secrets_in
from pynenc_postgres.db.values import as_utc
from pynenc_postgres.retention.purge import purge_app
from pynenc_postgres.state_backend.sql import StateBackendSql, statements

if TYPE_CHECKING:
    from pynenc.app import Pynenc
    from pynenc.invocation.dist_invocation import DistributedInvocation

InvocationRow = tuple[str, str, str | None, str | None, str | None, str | None, str | None]
# Results read ahead and not yet read by pynenc, kept at most (oldest first out).
PREFETCHED_RESULTS = 10_000
HistoryRow = tuple[str, datetime, str, str | None, datetime, str, str | None]
ContextRow = tuple[str, str, str | None, int, str, int]


class PostgresStateBackend(DatabaseComponent, BaseStateBackend[Params, Result]):
    """
    State backend that stores pynenc's invocations, history, results, exceptions,
    runner contexts, app info and workflow data in PostgreSQL.

    Rows of every app share one set of tables and are keyed by ``app_id``; ``purge``
    removes exactly this app's rows in one transaction. The schema is created and
    versioned by Alembic (``pynenc-postgres db upgrade``), never by this class.

    :param Pynenc app: the pynenc application.
    """

    def __init__(self, app: Pynenc) -> None:
        super().__init__(app)

    @cached_property
    def conf(self) -> ConfigStateBackendPostgres:
        return ConfigStateBackendPostgres(
            config_values=self.app.config_values,
            config_filepath=self.app.config_filepath,
        )

    @cached_property
    def sql(self) -> StateBackendSql:
        return statements(self.settings.schema)

    @cached_property
    def _invocations(self) -> BoundedCache[str, tuple[InvocationDTO, CallDTO]]:
        """Invocation rows this process read, by id: they never change once written."""
        return BoundedCache(int(self.conf.postgres_invocation_cache_size))

    @cached_property
    def _prefetched_results(self) -> BoundedCache[str, str]:
        """Results read ahead by the orchestrator with the final status that announced them."""
        return BoundedCache(PREFETCHED_RESULTS)

    def prefetch_result(self, invocation_id: InvocationId, serialized_result: str) -> None:
        """Keep a result read by another statement for the next read of it (once)."""
        self._prefetched_results.put(invocation_id, serialized_result)

    @cached_property
    def _registering(self) -> threading.local:
        return threading.local()

    # -- small helpers -------------------------------------------------------------

    def _fetchone(self, query: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        return self.db.fetchone(query, params)

    def _fetchall(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self.db.fetchall(query, params)

    def _write(self, query: str, params: Sequence[Any]) -> None:
        self.db.execute(query, params)

    def _ids(self, query: str, params: Sequence[Any]) -> Iterator[InvocationId]:
        return iter([InvocationId(row[0]) for row in self._fetchall(query, params)])

    # -- app info ------------------------------------------------------------------

    def store_app_info(self, app_info: AppInfo) -> None:
        """Register this app for discovery, with every password removed from its config.

        Always committed on its own, also inside ``in_transaction()``: it describes the
        app, not a submission, and pynenc writes it once per process.
        """
        with borrowed.suspended():
            self._write(
                self.sql.store_app_info, (app_info.app_id, app_info.module, _safe_json(app_info))
            )

    def get_app_info(self) -> AppInfo:
        """This app's stored info, with the secrets of its own config put back.

        The database holds the config without passwords. Where a stored URL is this
        process's URL minus its secrets, the process's URL is returned, so pynenc gets
        back what it stored.
        """
        row = self._fetchone(self.sql.get_app_info, (self.app_id,))
        if row is None:
            raise KeyError(f"App info for {self.app_id} not found")
        info = AppInfo.from_json(row[0])
        if info.config_values is None or not self.app.config_values:
            return info
        restored = restore_secrets(info.config_values, self.app.config_values)
        return dataclasses.replace(info, config_values=restored)

    @staticmethod
    def discover_app_infos() -> dict[str, AppInfo]:
        """Every app registered in the database named by the environment's config.

        Reads ``PYNENC__POSTGRES_URL`` (or ``postgres_url`` in ``pyproject.toml`` /
        ``PYNENC__FILEPATH``), like pynenc's other backends read their defaults.
        """
        settings = DatabaseSettings.from_config(ConfigStateBackendPostgres())
        sql = statements(settings.schema)

        rows = get_database(settings).fetchall(sql.all_app_infos)
        # Stripped again: rows written by earlier versions kept ?password= parameters.
        return {row[0]: _without_secrets(AppInfo.from_json(row[1])) for row in rows}

    # -- invocations ---------------------------------------------------------------

    def upsert_invocations(self, invocations: list[DistributedInvocation[Any, Any]]) -> None:
        """Store the invocations, unless the registration about to follow writes them.

        pynenc stores each new invocation as it is created, then stores it again with its
        registration. When :class:`~pynenc_postgres.orchestrator.PostgresOrchestrator`
        registers them in this database, its registration statement writes the rows, so
        the first write is left out (see :meth:`written_by_registration`).
        """
        self._enlist()
        if getattr(self._registering, "active", False):
            return
        super().upsert_invocations(invocations)

    @contextmanager
    def written_by_registration(self) -> Iterator[None]:
        """Invocations created in this block are stored by the registration that follows.

        Only for the orchestrator's combined registration, which writes the invocation
        rows in the same statement as their status, history and route.
        """
        previous = getattr(self._registering, "active", False)
        self._registering.active = True
        try:
            yield
        finally:
            self._registering.active = previous

    def _upsert_invocations(self, entries: list[tuple[InvocationDTO, CallDTO]]) -> None:
        if not entries:
            return
        # A row written again may change: the next read goes to the database.
        self._invocations.discard_many([inv.invocation_id for inv, _ in entries])
        # One statement may not update the same row twice; the last entry wins.
        latest = {inv.invocation_id: (inv, call) for inv, call in entries}
        columns: list[list[str | None]] = [[] for _ in range(10)]
        # Rows are locked in the order they are written; one global order (by id) means
        # concurrent batches over the same invocations queue up instead of deadlocking.
        for _, (inv, call) in sorted(latest.items()):
            workflow = inv.workflow
            values = (
                inv.invocation_id,
                call.call_id.task_id.key,
                call.call_id.key,
                call.call_id.args_id,
                json.dumps(call.serialized_arguments),
                inv.parent_invocation_id,
                inv.parent_event_id,
                workflow.workflow_id if workflow else None,
                workflow.workflow_type.key if workflow else None,
                workflow.parent_workflow_id if workflow else None,
            )
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        self._write(self.sql.upsert_invocations, (self.app_id, *columns))

    def _get_invocation(self, invocation_id: InvocationId) -> tuple[InvocationDTO, CallDTO] | None:
        cached = self._invocations.get(invocation_id)
        if cached is not None:
            return cached
        row = self._fetchone(self.sql.get_invocation, (self.app_id, invocation_id))
        if row is None:
            return None
        return self.remember_invocation_row(invocation_id, row)

    def invocation_from_row(
        self, invocation_id: InvocationId, row: InvocationRow
    ) -> DistributedInvocation[Any, Any]:
        """The invocation of a row read by another statement (the orchestrator's take).

        :param invocation_id: the invocation's id.
        :param row: ``call_id, serialized_arguments, parent_invocation_id,
            parent_event_id, workflow_id, workflow_type_key, parent_workflow_id``.
        """
        from pynenc.call import LazyCall
        from pynenc.invocation.dist_invocation import DistributedInvocation

        inv_dto, call_dto = self.remember_invocation_row(invocation_id, row)
        return DistributedInvocation.from_dto(inv_dto, call=LazyCall.from_dto(self.app, call_dto))

    def remember_invocation_row(
        self, invocation_id: InvocationId, row: InvocationRow
    ) -> tuple[InvocationDTO, CallDTO]:
        """DTOs of a committed invocation row, kept for the next read of the same id."""
        call_key, arguments, parent_id, parent_event, wf_id, wf_type, wf_parent = row
        call_id = CallId.from_key(call_key)
        workflow = (
            WorkflowIdentity(
                workflow_id=InvocationId(wf_id),
                workflow_type=TaskId.from_key(wf_type),
                parent_workflow_id=InvocationId(wf_parent) if wf_parent else None,
            )
            if wf_id and wf_type
            else None
        )
        inv_dto = InvocationDTO(
            invocation_id=InvocationId(invocation_id),
            call_id=call_id,
            workflow=workflow,
            parent_invocation_id=InvocationId(parent_id) if parent_id else None,
            parent_event_id=parent_event,
        )
        dtos = inv_dto, CallDTO(call_id=call_id, serialized_arguments=json.loads(arguments))
        self._invocations.put(invocation_id, dtos)
        return dtos

    def get_child_invocations(self, parent_invocation_id: InvocationId) -> Iterator[InvocationId]:
        return self._ids(self.sql.child_invocations, (self.app_id, parent_invocation_id))

    def get_invocations_by_parent_event(self, parent_event_id: str) -> Iterator[InvocationId]:
        return self._ids(self.sql.invocations_by_parent_event, (self.app_id, parent_event_id))

    def get_invocation_ids_by_workflow(
        self,
        workflow_id: str | None = None,
        workflow_type_key: str | None = None,
    ) -> Iterator[InvocationId]:
        if workflow_id and workflow_type_key:
            return self._ids(
                self.sql.invocations_by_workflow_and_type,
                (self.app_id, workflow_id, workflow_type_key),
            )
        if workflow_id:
            return self._ids(self.sql.invocations_by_workflow, (self.app_id, workflow_id))
        if workflow_type_key:
            return self._ids(
                self.sql.invocations_by_workflow_type, (self.app_id, workflow_type_key)
            )
        return self._ids(self.sql.all_invocations_of_app, (self.app_id,))

    # -- history -------------------------------------------------------------------

    def _add_histories(
        self,
        invocation_ids: list[InvocationId],
        invocation_history: InvocationHistory,
    ) -> None:
        if not invocation_ids:
            return
        record = invocation_history.status_record
        values = (
            self.app_id,
            as_utc(invocation_history.timestamp),
            record.status.value,
            record.runner_id,
            as_utc(record.timestamp),
            invocation_history.runner_context_id,
            invocation_history.registered_by_inv_id,
        )
        # pynenc's add_history and add_histories both pass one id per call; a plain
        # VALUES row spares adapting an array and unnesting it.
        if len(invocation_ids) == 1:
            self._write(self.sql.add_history, (invocation_ids[0], *values))
        else:
            # One lock order for every writer, so concurrent batches cannot deadlock.
            self._write(self.sql.add_histories, (*values, sorted(set(invocation_ids))))

    def _get_history(self, invocation_id: InvocationId) -> list[InvocationHistory]:
        rows = self._fetchall(self.sql.get_history, (self.app_id, invocation_id))
        return [_history_from_row(row) for row in rows]

    def iter_invocations_in_timerange(
        self,
        start_time: datetime,
        end_time: datetime,
        batch_size: int = 100,
    ) -> Iterator[list[InvocationId]]:
        """Distinct ids with history in the range, by keyset on ``invocation_id``."""
        start, end = as_utc(start_time), as_utc(end_time)
        after = ""
        while True:
            rows = self._fetchall(
                self.sql.invocation_ids_in_timerange,
                (self.app_id, start, end, after, batch_size),
            )
            if not rows:
                return
            yield [InvocationId(row[0]) for row in rows]
            after = rows[-1][0]

    def iter_history_in_timerange(
        self,
        start_time: datetime,
        end_time: datetime,
        batch_size: int = 100,
    ) -> Iterator[list[InvocationHistory]]:
        """History rows in timestamp order, each invocation's in write order.

        Keyset pagination on (recorded_at, invocation_id, write_order, status).
        """
        start, end = as_utc(start_time), as_utc(end_time)
        rows = self._fetchall(
            self.sql.history_in_timerange_first, (self.app_id, start, end, batch_size)
        )
        while rows:
            yield [_history_from_row(row) for row in rows]
            if len(rows) < batch_size:
                return
            last = rows[-1]
            rows = self._fetchall(
                self.sql.history_in_timerange_next,
                (self.app_id, last[1], last[0], last[7], last[2], end, batch_size),
            )

    # -- results and exceptions ----------------------------------------------------

    def _set_result(self, invocation_id: InvocationId, serialized_result: str) -> None:
        self._write(self.sql.set_result, (self.app_id, invocation_id, serialized_result))

    def _get_result(self, invocation_id: InvocationId) -> str:
        prefetched = self._prefetched_results.pop(invocation_id)
        if prefetched is not None:
            return prefetched
        row = self._fetchone(self.sql.get_result, (self.app_id, invocation_id))
        if row is None:
            raise KeyError(f"Result for invocation {invocation_id} not found")
        return str(row[0])

    def _set_exception(self, invocation_id: InvocationId, serialized_exception: str) -> None:
        error_name, is_pynenc_error = _exception_summary(serialized_exception)
        self._write(
            self.sql.set_exception,
            (self.app_id, invocation_id, error_name, is_pynenc_error, serialized_exception),
        )

    def _get_exception(self, invocation_id: InvocationId) -> str:
        row = self._fetchone(self.sql.get_exception, (self.app_id, invocation_id))
        if row is None:
            raise KeyError(f"Exception for invocation {invocation_id} not found")
        return str(row[0])

    # -- runner contexts -----------------------------------------------------------

    def _store_runner_context(self, runner_context: RunnerContext) -> None:
        # The base class stores parents with a call of their own; writing the whole
        # chain here keeps a child's parent row present in the same statement.
        chain: list[RunnerContext] = []
        ctx: RunnerContext | None = runner_context
        while ctx is not None:
            chain.append(ctx)
            ctx = ctx.parent_ctx
        self._write(
            self.sql.store_runner_context,
            (
                self.app_id,
                [c.runner_id for c in chain],
                [c.runner_cls for c in chain],
                [c.parent_ctx.runner_id if c.parent_ctx else None for c in chain],
                [c.pid for c in chain],
                [c.hostname for c in chain],
                [c.thread_id for c in chain],
            ),
        )

    def _get_runner_context(self, runner_id: str) -> RunnerContext | None:
        found = self._get_runner_contexts([runner_id])
        return found[0] if found else None

    def _get_runner_contexts(self, runner_ids: list[str]) -> list[RunnerContext]:
        if not runner_ids:
            return []
        rows = self._fetchall(
            self.sql.get_runner_contexts_with_ancestors,
            (self.app_id, list(runner_ids), self.app_id),
        )
        by_id = _contexts_from_rows(rows)
        return [by_id[rid] for rid in dict.fromkeys(runner_ids) if rid in by_id]

    def get_matching_runner_contexts(self, partial_id: str) -> Iterator[RunnerContext]:
        """Contexts whose ``runner_id`` contains ``partial_id`` literally (``%``, ``_`` too)."""
        pattern = f"%{escape_like(partial_id)}%"
        rows = self._fetchall(self.sql.match_runner_contexts, (self.app_id, pattern, self.app_id))
        by_id = _contexts_from_rows([row[:6] for row in rows])
        return iter([by_id[row[0]] for row in rows if row[6]])

    # -- workflows -----------------------------------------------------------------

    def store_workflow_run(self, workflow_identity: WorkflowIdentity) -> None:
        self._write(
            self.sql.store_workflow_run,
            (
                self.app_id,
                workflow_identity.workflow_id,
                workflow_identity.workflow_type.key,
                workflow_identity.parent_workflow_id,
            ),
        )

    def get_all_workflow_types(self) -> Iterator[TaskId]:
        rows = self._fetchall(self.sql.workflow_types, (self.app_id,))
        return iter([TaskId.from_key(row[0]) for row in rows])

    def get_all_workflow_runs(self) -> Iterator[WorkflowIdentity]:
        return _workflows(self._fetchall(self.sql.all_workflow_runs, (self.app_id,)))

    def get_workflow_runs(self, workflow_type: TaskId) -> Iterator[WorkflowIdentity]:
        rows = self._fetchall(self.sql.workflow_runs_of_type, (self.app_id, workflow_type.key))
        return _workflows(rows)

    def set_workflow_data(self, workflow_identity: WorkflowIdentity, key: str, value: Any) -> None:
        serialized = self.app.client_data_store.serialize(value)
        self._write(
            self.sql.set_workflow_data,
            (self.app_id, workflow_identity.workflow_id, key, serialized),
        )

    def get_workflow_data(
        self, workflow_identity: WorkflowIdentity, key: str, default: Any = None
    ) -> Any:
        row = self._fetchone(
            self.sql.get_workflow_data, (self.app_id, workflow_identity.workflow_id, key)
        )
        if row is None:
            return default
        return self.app.client_data_store.deserialize(row[0])

    def store_workflow_sub_invocation(
        self, parent_workflow_id: InvocationId, sub_invocation_id: InvocationId
    ) -> None:
        self._write(
            self.sql.store_workflow_sub_invocation,
            (self.app_id, parent_workflow_id, sub_invocation_id),
        )

    def get_workflow_sub_invocations(self, workflow_id: InvocationId) -> Iterator[InvocationId]:
        return self._ids(self.sql.workflow_sub_invocations, (self.app_id, workflow_id))

    # -- inside the application's transaction --------------------------------------

    def store_runner_context(self, runner_context: RunnerContext) -> None:
        """Store a runner context and its parents, committed on their own.

        Every submission of a process names the same context, so inside
        ``in_transaction()`` its row would stay locked until the application commits,
        and the process's other transactions (other threads, other requests) would wait
        on it. Like the app info, it describes the process, not the submission.
        """
        if borrowed.current() is None:
            super().store_runner_context(runner_context)
            return
        with borrowed.suspended():
            super().store_runner_context(runner_context)

    # -- purge ---------------------------------------------------------------------

    def purge(self) -> None:
        """Delete every row of this app, and nothing else, in one transaction."""

        purge_app(self.db, self.settings.schema, self.app_id, tables.STATE_TABLES)
        self._runner_context_cache.clear()
        self._invocations.clear()
        self._prefetched_results.clear()


def _without_secrets(app_info: AppInfo) -> AppInfo:
    if app_info.config_values is None:
        return app_info
    return dataclasses.replace(app_info, config_values=strip_secrets_in(app_info.config_values))


def _safe_json(app_info: AppInfo) -> str:
    safe: str = _without_secrets(app_info).to_json()
    return safe


def _exception_summary(serialized_exception: str) -> tuple[str, bool]:
    try:
        document = json.loads(serialized_exception)
        return str(document.get("error_name") or "unknown"), bool(document.get("pynenc_error"))
    except (ValueError, AttributeError):
        return "unknown", False


def _history_from_row(row: HistoryRow) -> InvocationHistory:
    # Time-range reads append write_order, their pagination key, after these columns.
    invocation_id, recorded_at, status, owner, status_set_at, runner_id, registered_by = row[:7]
    history = InvocationHistory(
        invocation_id=invocation_id,
        status_record=InvocationStatusRecord(
            status=InvocationStatus(status),
            runner_id=owner,
            timestamp=status_set_at.astimezone(UTC),
        ),
        runner_context_id=runner_id,
        registered_by_inv_id=registered_by,
    )
    history._timestamp = recorded_at.astimezone(UTC)
    return history


def _contexts_from_rows(rows: list[ContextRow]) -> dict[str, RunnerContext]:
    """Build contexts with their parent chains from rows that include every ancestor."""
    by_row = {row[0]: row for row in rows}
    built: dict[str, RunnerContext] = {}

    def build(runner_id: str) -> RunnerContext:
        if runner_id not in built:
            _, runner_cls, parent_id, pid, hostname, thread_id = by_row[runner_id]
            parent = build(parent_id) if parent_id and parent_id in by_row else None
            built[runner_id] = RunnerContext(
                runner_cls=runner_cls,
                runner_id=runner_id,
                parent_ctx=parent,
                pid=pid,
                hostname=hostname,
                thread_id=thread_id,
            )
        return built[runner_id]

    for runner_id in by_row:
        build(runner_id)
    return built


def _workflows(rows: list[tuple[Any, ...]]) -> Iterator[WorkflowIdentity]:
    return iter(
        [
            WorkflowIdentity(
                workflow_id=InvocationId(wf_id),
                workflow_type=TaskId.from_key(wf_type),
                parent_workflow_id=InvocationId(parent) if parent else None,
            )
            for wf_id, wf_type, parent in rows
        ]
    )
