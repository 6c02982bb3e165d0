"""PostgresTrigger: pynenc's trigger state in PostgreSQL, safe across processes and hosts."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pynenc.conf.validation_trigger import validate_trigger_config
from pynenc.identifiers.task_id import TaskId
from pynenc.models.trigger_definition_dto import TriggerDefinitionDTO
from pynenc.trigger.base_trigger import BaseTrigger
from pynenc.trigger.conditions import CompositeLogic, TriggerCondition, ValidCondition
from pynenc.trigger.monitoring import EventMarker, EventMarkerPage, EventRecord, TriggerRunRecord

from pynenc_postgres.conf import ConfigTriggerPostgres
from pynenc_postgres.db import tables
from pynenc_postgres.db.component import DatabaseComponent
from pynenc_postgres.db.values import as_utc
from pynenc_postgres.retention.purge import purge_app
from pynenc_postgres.trigger import sql as trigger_sql
from pynenc_postgres.trigger.sql import FLAG_FILTERS, TriggerSql, statements

if TYPE_CHECKING:
    from pynenc.app import Pynenc
    from pynenc.trigger.conditions import ConditionContext

# Rows a retention statement deletes at most, so each runs as one short transaction.
PURGE_BATCH = 5_000

ParticipantRow = tuple[str | None, str | None, str | None, str | None, str | None]


class PostgresTrigger(DatabaseComponent, BaseTrigger):
    """
    Trigger component that keeps conditions, triggers, cron ticks, trigger-run claims,
    events and trigger runs in PostgreSQL.

    Any number of runner processes, on any number of hosts, can share it: the cron
    compare-and-set and the trigger-run claim are single conditional statements, so
    exactly one process wins each tick and each run, and claim expiry is measured with
    the database server's clock. Rows of every app share one set of tables keyed by
    ``app_id``; ``purge`` removes exactly this app's rows in one transaction. The
    tables are created by Alembic (``pynenc-postgres db upgrade``), never by this class.

    :param Pynenc app: the pynenc application.
    """

    def __init__(self, app: Pynenc) -> None:
        super().__init__(app)

    @cached_property
    def conf(self) -> ConfigTriggerPostgres:
        config = ConfigTriggerPostgres(
            config_values=self.app.config_values,
            config_filepath=self.app.config_filepath,
        )
        validate_trigger_config(config)
        return config

    @cached_property
    def sql(self) -> TriggerSql:
        return statements(self.settings.schema)

    # -- conditions and triggers ---------------------------------------------------

    def _register_condition(self, condition: TriggerCondition) -> None:
        self.db.execute(
            self.sql.upsert_condition,
            (
                self.app_id,
                condition.condition_id,
                type(condition).__name__,
                condition.to_json(self.app),
            ),
        )

    def get_condition(self, condition_id: str) -> TriggerCondition | None:
        return self.get_conditions_batch([condition_id])[condition_id]

    def get_conditions_batch(self, condition_ids: Sequence[str]) -> dict[str, Any]:
        found = {
            row[0]: TriggerCondition.from_json(row[1], self.app)
            for row in self._read(self.sql.get_conditions, (self.app_id, list(condition_ids)))
        }
        return {cid: found.get(cid) for cid in condition_ids}

    def _get_all_conditions(self) -> list[TriggerCondition]:
        rows = self._read(self.sql.all_conditions, (self.app_id,))
        return [TriggerCondition.from_json(row[0], self.app) for row in rows]

    def _register_source_task_condition(self, task_id: TaskId, condition_id: str) -> None:
        self.db.execute(
            self.sql.add_source_task_condition, (self.app_id, task_id.key, condition_id)
        )

    def get_conditions_sourced_from_task(
        self, task_id: TaskId, context_type: type[ConditionContext] | None = None
    ) -> list[TriggerCondition]:
        rows = self._read(self.sql.conditions_of_source_task, (self.app_id, task_id.key))
        conditions = [TriggerCondition.from_json(row[0], self.app) for row in rows]
        if context_type is not None:
            conditions = [c for c in conditions if c.context_type == context_type]
        return conditions

    def register_trigger(self, trigger: TriggerDefinitionDTO) -> None:
        app_id, trigger_id = self.app_id, trigger.trigger_id
        # One row per condition; a condition listed twice keeps its first place.
        condition_ids = list(dict.fromkeys(trigger.condition_ids))
        self.db.execute(
            self.sql.register_trigger,
            (
                *(app_id, trigger_id, trigger.task_id.key, trigger.logic.value),
                trigger.argument_provider_json,
                *(app_id, trigger_id, condition_ids),
                *(app_id, trigger_id, condition_ids),
            ),
        )

    def _get_trigger(self, trigger_id: str) -> TriggerDefinitionDTO | None:
        return self._get_triggers([trigger_id]).get(trigger_id)

    def _get_triggers(self, trigger_ids: Sequence[str]) -> dict[str, TriggerDefinitionDTO]:
        rows = self._read(self.sql.get_triggers, (self.app_id, list(trigger_ids)))
        return {row[0]: _trigger_from_row(row) for row in rows}

    def get_triggers_batch(self, trigger_ids: Sequence[str]) -> dict[str, Any]:
        from pynenc.trigger.trigger_definitions import TriggerDefinition

        found = self._get_triggers(trigger_ids)
        return {
            tid: TriggerDefinition.from_dto(found[tid], self.app) if tid in found else None
            for tid in trigger_ids
        }

    def get_triggers_for_condition(self, condition_id: str) -> list[TriggerDefinitionDTO]:
        rows = self._read(self.sql.triggers_for_condition, (self.app_id, condition_id))
        return [_trigger_from_row(row) for row in rows]

    def clean_task_trigger_definitions(self, task_id: TaskId) -> None:
        self.db.execute(self.sql.clean_task_triggers, (self.app_id, task_id.key, self.app_id))

    # -- the valid-condition queue -------------------------------------------------

    def record_valid_condition(self, valid_condition: ValidCondition) -> None:
        self.record_valid_conditions([valid_condition])

    def record_valid_conditions(self, valid_conditions: list[ValidCondition]) -> None:
        if not valid_conditions:
            return
        # One statement may not update a row twice; the last entry for an id wins.
        latest = {vc.valid_condition_id: vc for vc in valid_conditions}
        ids = sorted(latest)  # one lock order for every writer
        self.db.execute(
            self.sql.record_valid_conditions,
            (
                self.app_id,
                ids,
                [latest[i].condition.condition_id for i in ids],
                [latest[i].to_json(self.app) for i in ids],
            ),
        )

    def get_valid_conditions(self) -> dict[str, ValidCondition]:
        rows = self._read(self.sql.valid_conditions, (self.app_id,))
        return {row[0]: ValidCondition.from_json(row[1], self.app) for row in rows}

    def clear_valid_conditions(self, conditions: Iterable[ValidCondition]) -> None:
        ids = sorted({c.valid_condition_id for c in conditions})
        if ids:
            self.db.execute(self.sql.clear_valid_conditions, (self.app_id, ids))

    # -- cron ticks and trigger-run claims -----------------------------------------

    def get_last_cron_execution(self, condition_id: str) -> datetime | None:
        row = self.db.fetchone(self.sql.last_cron_execution, (self.app_id, condition_id))
        return row[0].astimezone(UTC) if row else None

    def store_last_cron_execution(
        self,
        condition_id: str,
        execution_time: datetime,
        expected_last_execution: datetime | None = None,
    ) -> bool:
        """Record ``execution_time`` if the stored last execution is still the expected one.

        One conditional statement: of any number of processes passing the same
        ``expected_last_execution``, exactly one gets True. ``None`` expects that no
        execution was ever recorded for the condition.

        :param condition_id: the cron condition.
        :param execution_time: the tick being claimed (naive values are taken as UTC).
        :param expected_last_execution: the last execution this caller read.
        :return: True for the one caller whose write landed.
        """
        token = uuid.uuid4().hex
        if expected_last_execution is None:
            row = self.db.fetchone(
                self.sql.first_cron_execution,
                (self.app_id, condition_id, as_utc(execution_time), token),
            )
        else:
            execution = as_utc(execution_time)
            row = self.db.fetchone(
                self.sql.next_cron_execution,
                (
                    *(execution, token, self.app_id, condition_id),
                    *(as_utc(expected_last_execution), token, execution),
                ),
            )
        return row is not None

    def claim_trigger_run(self, trigger_run_id: str, expiration_seconds: int = 60) -> bool:
        """Claim ``trigger_run_id`` for ``expiration_seconds`` of the server's clock.

        One statement: a first claim inserts, a claim past its expiry is taken over, a
        live one is left to its holder. Exactly one of concurrent claimers gets True.

        :param trigger_run_id: the trigger run to execute.
        :param expiration_seconds: how long the claim holds before another may take it.
        :return: True when this call holds the claim.
        """
        row = self.db.fetchone(
            self.sql.claim_trigger_run,
            (self.app_id, trigger_run_id, uuid.uuid4().hex, expiration_seconds),
        )
        return row is not None

    # -- purge ---------------------------------------------------------------------

    def _purge(self) -> None:
        """Delete every trigger row of this app, and nothing else, in one transaction."""

        purge_app(self.db, self.settings.schema, self.app_id, tables.TRIGGER_TABLES)

    # -- events --------------------------------------------------------------------

    def store_event(self, event: EventRecord) -> None:
        self.db.execute(
            self.sql.store_event,
            (
                *(self.app_id, event.event_id, event.event_code, as_utc(event.timestamp)),
                len(event.matched_condition_ids),
                event.emitted_by_invocation_id,
                event.emitted_by_task_id,
                event.emitted_by_runner_context_id,
                event.to_json(self.app),
                *(self.app_id, event.event_id, list(event.triggered_invocation_ids)),
            ),
        )

    def get_event(self, event_id: str) -> EventRecord | None:
        return self.get_events_batch([event_id])[event_id]

    def get_events_batch(self, event_ids: Sequence[str]) -> dict[str, Any]:
        if not event_ids:
            return {}
        rows = self._read(self.sql.get_events_by_id, (self.app_id, list(event_ids)))
        found = {row[0]: self._event_from_row(row) for row in rows}
        return {eid: found.get(eid) for eid in event_ids}

    def get_events(
        self,
        *,
        event_code: str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        matched: bool | None = None,
        triggered: bool | None = None,
        emitted_by_invocation_id: str | None = None,
        emitted_by_task_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[EventRecord]:
        filters, values = _event_filters(
            event_code=event_code,
            start_time=start_time,
            end_time=end_time,
            matched=matched,
            triggered=triggered,
            emitted_by_invocation_id=emitted_by_invocation_id,
            emitted_by_task_id=emitted_by_task_id,
        )
        rows = self._read(
            trigger_sql.events_page(self.sql.schema, filters),
            (self.app_id, *values, limit, offset),
        )
        return [self._event_from_row(row) for row in rows]

    def count_events(
        self,
        *,
        event_code: str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        matched: bool | None = None,
        triggered: bool | None = None,
        emitted_by_invocation_id: str | None = None,
        emitted_by_task_id: str | None = None,
    ) -> int:
        filters, values = _event_filters(
            event_code=event_code,
            start_time=start_time,
            end_time=end_time,
            matched=matched,
            triggered=triggered,
            emitted_by_invocation_id=emitted_by_invocation_id,
            emitted_by_task_id=emitted_by_task_id,
        )
        row = self.db.fetchone(
            trigger_sql.events_count(self.sql.schema, filters), (self.app_id, *values)
        )
        return int(row[0]) if row else 0

    def get_event_markers_in_timerange(
        self,
        start_time: datetime,
        end_time: datetime,
        *,
        event_code: str | None = None,
        state: str = "all",
        limit: int = 1000,
        offset: int = 0,
    ) -> EventMarkerPage:
        filters: tuple[str, ...] = ()
        values: tuple[Any, ...] = ()
        if event_code is not None:
            filters, values = ("event_code",), (event_code,)
        # Like pynenc's own triggers, any other state (``all``) filters nothing.
        if state in FLAG_FILTERS:
            filters = (*filters, state)
        window = (as_utc(start_time), as_utc(end_time))
        total_row = self.db.fetchone(
            trigger_sql.events_count(self.sql.schema, ("start_time", "end_time", *filters)),
            (self.app_id, *window, *values),
        )
        total = int(total_row[0]) if total_row else 0
        rows = self._read(
            trigger_sql.event_markers(self.sql.schema, filters),
            (self.app_id, *window, *values, limit, offset),
        )
        markers = [
            EventMarker(
                event_id=row[0],
                event_code=row[1],
                timestamp=row[2].astimezone(UTC),
                matched=row[3],
                triggered=row[4],
                emitted_by_invocation_id=row[5],
                emitted_by_runner_context_id=row[6],
            )
            for row in rows
        ]
        return EventMarkerPage(
            markers=markers, total=total, truncated=offset + len(markers) < total
        )

    def link_trigger_run_to_events(
        self, event_ids: list[str], invocation_id: str, *, trigger_run_id: str
    ) -> None:
        if event_ids:
            self.db.execute(
                self.sql.link_trigger_run_to_events,
                (self.app_id, invocation_id, trigger_run_id, list(dict.fromkeys(event_ids))),
            )

    def get_invocations_triggered_by_event(self, event_id: str) -> list[str]:
        rows = self._read(self.sql.invocations_of_event, (self.app_id, event_id))
        return [row[0] for row in rows]

    def list_event_codes(self) -> list[str]:
        return [row[0] for row in self._read(self.sql.event_codes, (self.app_id,))]

    def _event_from_row(self, row: tuple[Any, ...]) -> EventRecord:
        record: EventRecord = EventRecord.from_json(row[1], self.app)
        record.triggered_invocation_ids = list(row[2])
        return record

    # -- trigger runs --------------------------------------------------------------

    def store_trigger_run(self, run: TriggerRunRecord) -> None:
        participants = _participant_rows(run)
        columns: list[list[str | None]] = [[], [], [], [], []]
        for participant in participants:
            for column, value in zip(columns, participant, strict=True):
                column.append(value)
        app_id, run_id = self.app_id, run.trigger_run_id
        claimed_at = as_utc(run.claimed_at) if run.claimed_at else None
        executed_at = as_utc(run.executed_at) if run.executed_at else None
        self.db.execute(
            self.sql.store_trigger_run,
            (
                *(app_id, run_id, run.trigger_id, run.task_id_key, run.logic_value),
                *(run.triggered_invocation_id, run.atomic_service_run_id),
                *(claimed_at, executed_at, claimed_at, run.to_json()),
                *(app_id, run_id, columns[0]),
                *(app_id, run_id, *columns),
            ),
        )

    def get_trigger_run(self, trigger_run_id: str) -> TriggerRunRecord | None:
        return self.get_trigger_runs_batch([trigger_run_id])[trigger_run_id]

    def get_trigger_runs_batch(self, run_ids: Sequence[str]) -> dict[str, Any]:
        if not run_ids:
            return {}
        rows = self._read(self.sql.get_trigger_runs, (self.app_id, list(run_ids)))
        found = {row[0]: TriggerRunRecord.from_json(row[1]) for row in rows}
        return {rid: found.get(rid) for rid in run_ids}

    def get_trigger_runs_for_event(self, event_id: str) -> list[TriggerRunRecord]:
        return self._runs(self.sql.runs_for_event, (self.app_id, self.app_id, event_id))

    def get_trigger_runs_for_invocation(self, invocation_id: str) -> list[TriggerRunRecord]:
        return self._runs(self.sql.runs_for_invocation, (self.app_id, invocation_id))

    def get_trigger_runs_sourced_by_invocation(self, invocation_id: str) -> list[TriggerRunRecord]:
        return self._runs(
            self.sql.runs_sourced_by_invocation, (self.app_id, self.app_id, invocation_id)
        )

    def get_trigger_runs_for_valid_condition(
        self, valid_condition_id: str
    ) -> list[TriggerRunRecord]:
        return self._runs(
            self.sql.runs_for_valid_condition, (self.app_id, self.app_id, valid_condition_id)
        )

    def get_trigger_runs_in_timerange(
        self,
        start_time: datetime,
        end_time: datetime,
        *,
        event_code: str | None = None,
        task_id_key: str | None = None,
        limit: int | None = None,
    ) -> list[TriggerRunRecord]:
        query = trigger_sql.runs_in_timerange(
            self.sql.schema, by_task=task_id_key is not None, by_event_code=event_code is not None
        )
        params: list[Any] = [self.app_id, as_utc(start_time), as_utc(end_time)]
        params += [value for value in (task_id_key, event_code) if value is not None]
        return self._runs(query, (*params, limit))

    def get_referenced_atomic_service_run_ids(self) -> set[str]:
        rows = self._read(self.sql.referenced_atomic_service_runs, (self.app_id,))
        return {row[0] for row in rows}

    def _runs(self, query: str, params: Sequence[Any]) -> list[TriggerRunRecord]:
        return [TriggerRunRecord.from_json(row[0]) for row in self._read(query, params)]

    # -- retention -----------------------------------------------------------------

    # Each retention statement takes (app id, its own values..., batch size, app id, app id)
    # and deletes at most one batch; it is repeated until a batch comes back short.

    def _age_purge_events(self, threshold: datetime) -> list[str]:
        return self._delete_batches(self.sql.age_purge_events, as_utc(threshold))

    def _cap_purge_events(self) -> list[str]:
        keep = self.conf.event_max_records
        if keep <= 0:
            return []
        return self._delete_batches(self.sql.cap_purge_events, keep)

    def _age_purge_trigger_runs(self, threshold: datetime) -> int:
        # Claims of runs this old can no longer matter; they go with the runs.
        app_id, moment = self.app_id, as_utc(threshold)
        self._count_batches(self.sql.purge_expired_claims, (app_id, moment, PURGE_BATCH, app_id))
        return self._count_batches(
            self.sql.age_purge_trigger_runs, (app_id, moment, PURGE_BATCH, app_id, app_id)
        )

    def _cap_purge_trigger_runs(self) -> int:
        keep = self.conf.trigger_run_max_records
        if keep <= 0:
            return 0
        app_id = self.app_id
        return self._count_batches(
            self.sql.cap_purge_trigger_runs, (app_id, keep, PURGE_BATCH, app_id, app_id)
        )

    def _cascade_delete_runs_for_events(self, event_ids: list[str]) -> int:
        ids = list(dict.fromkeys(event_ids))
        app_id, deleted = self.app_id, 0
        for start in range(0, len(ids), PURGE_BATCH):
            row = self.db.fetchone(
                self.sql.cascade_delete_runs_for_events,
                (app_id, ids[start : start + PURGE_BATCH], app_id, app_id),
            )
            deleted += int(row[0]) if row else 0
        return deleted

    def _delete_batches(self, query: str, value: Any) -> list[str]:
        """Repeat a batched event delete until a batch comes back short; the deleted ids."""
        removed: list[str] = []
        params = (self.app_id, value, PURGE_BATCH, self.app_id, self.app_id)
        while True:
            rows = self._read(query, params)
            removed.extend(row[0] for row in rows)
            if len(rows) < PURGE_BATCH:
                return removed

    def _count_batches(self, query: str, params: Sequence[Any]) -> int:
        """Repeat a batched delete that returns its count until a batch comes back short."""
        total = 0
        while True:
            row = self.db.fetchone(query, params)
            count = int(row[0]) if row else 0
            total += count
            if count < PURGE_BATCH:
                return total

    # -- helpers -------------------------------------------------------------------

    def _read(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self.db.fetchall(query, params)


def _trigger_from_row(row: tuple[Any, ...]) -> TriggerDefinitionDTO:
    trigger_id, task_key, logic, arguments, condition_ids = row
    return TriggerDefinitionDTO(
        trigger_id=trigger_id,
        task_id=TaskId.from_key(task_key),
        condition_ids=list(condition_ids),
        logic=CompositeLogic(logic),
        argument_provider_json=arguments,
    )


def _participant_rows(run: TriggerRunRecord) -> list[ParticipantRow]:
    """(context type, condition, valid condition, event, source invocation) per participant.

    A record built without participants (by hand, or by an older pynenc) still gets one
    row per valid condition, event and source invocation, so the indexed lookups find it.
    """
    if run.participants:
        return [
            (
                p.context_type,
                p.condition_id,
                p.valid_condition_id,
                p.event_id,
                p.source_invocation_id,
            )
            for p in run.participants
        ]
    rows: list[ParticipantRow] = [(None, None, vc, None, None) for vc in run.valid_condition_ids]
    rows += [(None, None, None, event_id, None) for event_id in run.event_ids]
    rows += [(None, None, None, None, source) for source in run.source_invocation_ids]
    return rows


def _event_filters(
    *,
    event_code: str | None,
    start_time: datetime | None,
    end_time: datetime | None,
    matched: bool | None,
    triggered: bool | None,
    emitted_by_invocation_id: str | None,
    emitted_by_task_id: str | None,
) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    """The filter names (see :data:`~pynenc_postgres.trigger.sql.EVENT_FILTERS`) and values."""
    filters: list[str] = []
    values: list[Any] = []
    for name, value in (
        ("event_code", event_code),
        ("start_time", as_utc(start_time) if start_time else None),
        ("end_time", as_utc(end_time) if end_time else None),
    ):
        if value is not None:
            filters.append(name)
            values.append(value)
    if matched is not None:
        filters.append("matched" if matched else "unmatched")
    if triggered is not None:
        filters.append("triggered" if triggered else "untriggered")
    for name, value in (
        ("emitted_by_invocation_id", emitted_by_invocation_id),
        ("emitted_by_task_id", emitted_by_task_id),
    ):
        if value is not None:
            filters.append(name)
            values.append(value)
    return tuple(filters), tuple(values)
