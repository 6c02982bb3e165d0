"""Every statement the orchestrator runs, written once per Postgres schema.

Status changes are compare-and-set: one ``UPDATE ... WHERE status = ANY(<allowed
predecessors>) AND <ownership rule> RETURNING``, so the check and the write are one
step on the server and two runners racing for an invocation cannot both win. Every
time that is compared across hosts (heartbeats, pending ages, a runner's death, the
atomic-service slot) is written and compared with the server's clock: ``now()`` for
values shared by one statement's rows, ``clock_timestamp()`` where the moment a row
lock was obtained matters.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from pynenc_postgres.db import tables as t

# Shared with the state backend until the helper moves into ``db/``.
from pynenc_postgres.db.sql import quote_ident

# ``%s`` seconds as an interval, for comparisons with the server clock.
_SECONDS = "make_interval(secs => %s::float8)"


@dataclass(frozen=True)
class FilteredQueries:
    """One query in the variants pynenc's optional filters call for.

    Separate statements (rather than ``%s IS NULL OR ...``) keep each one's plan on
    the index that fits it.
    """

    plain: str
    by_task: str
    by_status: str
    by_task_and_status: str

    def pick(self, task: bool, status: bool) -> str:
        if task and status:
            return self.by_task_and_status
        if task:
            return self.by_task
        return self.by_status if status else self.plain


@dataclass(frozen=True)
class OrchestratorSql:
    """SQL text for one schema; parameters use psycopg's ``%s`` placeholders."""

    register_invocations: str
    transition: str
    transition_overriding_owner: str
    status_record: str
    existing_by_task: str
    existing_by_task_and_status: str
    existing_by_arguments: str
    existing_by_arguments_and_status: str
    invocations_of_call: str
    paginated: FilteredQueries
    count: FilteredQueries
    index_arguments: str
    set_purgeable: str
    increment_retries: str
    get_retries: str
    filter_by_status: str
    waiting_for_results: str
    release_waiters: str
    blocking_invocations: str
    register_heartbeats: str
    active_runners: str
    active_runners_by_eligibility: str
    pending_for_recovery: str
    stranded_for_recovery: str
    route_stranded: str
    recover_running: str
    running_for_recovery: str
    abandon_dead_holder: str
    start_running_execution: str
    running_execution: str
    record_execution: str
    finalize_execution: str
    active_executions: str
    executions_in_timerange: str
    purge_aged_executions: str
    purge_excess_executions: str
    purge_app: tuple[str, ...]


@cache
def statements(schema: str) -> OrchestratorSql:
    """Render the statements for ``schema`` (cached: built once per process and schema)."""
    s = quote_ident(schema)
    inv = f"{s}.{t.ORCHESTRATOR_INVOCATION}"
    arg = f"{s}.{t.ORCHESTRATOR_ARGUMENT}"
    wait = f"{s}.{t.ORCHESTRATOR_WAITING}"
    beat = f"{s}.{t.RUNNER_HEARTBEAT}"
    queue = f"{s}.{t.BROKER_MESSAGE}"
    ase = f"{s}.{t.ATOMIC_SERVICE_EXECUTION}"
    ase_columns = "runner_id, atomic_service_run_id, start_time, end_time, status, reason"
    transition = f"""
        UPDATE {inv} SET
            status = %s,
            status_owner_id = CASE WHEN %s::boolean THEN status_owner_id ELSE %s::text END,
            status_set_at = clock_timestamp(),
            status_change_id = %s,
            taken_at = NULL
        WHERE app_id = %s AND invocation_id = %s AND status = ANY(%s::text[])"""
    matching_arguments = f"""
            SELECT a.invocation_id FROM {arg} a
            JOIN unnest(%s::text[], %s::text[]) AS k(name, value)
              ON a.argument_name = k.name AND a.value_md5 = md5(k.value)
             AND a.serialized_value = k.value
            WHERE a.app_id = %s
            GROUP BY a.invocation_id HAVING count(*) = %s"""

    def filtered(select: str, tail: str) -> FilteredQueries:
        where = f"{select} WHERE app_id = %s"
        return FilteredQueries(
            plain=f"{where}{tail}",
            by_task=f"{where} AND task_id = %s{tail}",
            by_status=f"{where} AND status = ANY(%s::text[]){tail}",
            by_task_and_status=f"{where} AND task_id = %s AND status = ANY(%s::text[]){tail}",
        )

    return OrchestratorSql(
        register_invocations=f"""
            WITH registered AS (
                INSERT INTO {inv} (app_id, invocation_id, task_id, call_id, status,
                                   status_owner_id, status_set_at)
                SELECT %s, u.invocation_id, u.task_id, u.call_id, 'registered', %s, now()
                FROM unnest(%s::text[], %s::text[], %s::text[])
                     AS u(invocation_id, task_id, call_id)
                ON CONFLICT (app_id, invocation_id) DO NOTHING
            )
            SELECT now()""",
        # The current owner must be the caller when the current status requires it.
        transition=f"""{transition}
              AND (status <> ALL(%s::text[]) OR status_owner_id IS NOT DISTINCT FROM %s)
            RETURNING status_owner_id, status_set_at""",
        transition_overriding_owner=f"""{transition}
            RETURNING status_owner_id, status_set_at""",
        status_record=f"""
            SELECT status, status_owner_id, status_set_at, status_change_id FROM {inv}
            WHERE app_id = %s AND invocation_id = %s""",
        existing_by_task=f"""
            SELECT invocation_id FROM {inv} WHERE app_id = %s AND task_id = %s""",
        existing_by_task_and_status=f"""
            SELECT invocation_id FROM {inv}
            WHERE app_id = %s AND task_id = %s AND status = ANY(%s::text[])""",
        existing_by_arguments=f"""
            SELECT invocation_id FROM {inv}
            WHERE app_id = %s AND task_id = %s AND invocation_id IN ({matching_arguments})""",
        existing_by_arguments_and_status=f"""
            SELECT invocation_id FROM {inv}
            WHERE app_id = %s AND task_id = %s AND status = ANY(%s::text[])
              AND invocation_id IN ({matching_arguments})""",
        invocations_of_call=f"""
            SELECT invocation_id FROM {inv} WHERE app_id = %s AND call_id = %s""",
        # Newest registrations first; a status change does not move an invocation
        # between pages while a caller walks them.
        paginated=filtered(
            f"SELECT invocation_id FROM {inv}",
            " ORDER BY registered_at DESC, invocation_id DESC LIMIT %s OFFSET %s",
        ),
        count=filtered(f"SELECT count(*) FROM {inv}", ""),
        index_arguments=f"""
            INSERT INTO {arg} (app_id, invocation_id, argument_name, serialized_value,
                               value_md5)
            SELECT %s, %s, u.name, u.value, md5(u.value)
            FROM unnest(%s::text[], %s::text[]) AS u(name, value)
            ON CONFLICT (app_id, invocation_id, argument_name) DO UPDATE SET
                serialized_value = excluded.serialized_value, value_md5 = excluded.value_md5""",
        set_purgeable=f"""
            UPDATE {inv} SET purgeable_since = now()
            WHERE app_id = %s AND invocation_id = %s""",
        # The increment's own id: resent after a lost reply, it finds its id and adds nothing.
        increment_retries=f"""
            UPDATE {inv} SET retries = retries + 1, retries_change_id = %s
            WHERE app_id = %s AND invocation_id = %s
              AND retries_change_id IS DISTINCT FROM %s""",
        get_retries=f"SELECT retries FROM {inv} WHERE app_id = %s AND invocation_id = %s",
        filter_by_status=f"""
            SELECT invocation_id FROM {inv}
            WHERE app_id = %s AND invocation_id = ANY(%s::text[]) AND status = ANY(%s::text[])""",
        # New edges notify (channel, payload): every process asks blocking control again.
        # An edge already there notifies nothing, so a waiter that repeats the call in
        # its wait loop costs no notification.
        waiting_for_results=f"""
            WITH added AS (
                INSERT INTO {wait} (app_id, waiter_invocation_id, waited_invocation_id)
                SELECT %s, %s, u.waited FROM unnest(%s::text[]) AS u(waited)
                ON CONFLICT DO NOTHING
                RETURNING 1
            )
            SELECT pg_notify(%s, %s) WHERE EXISTS (SELECT 1 FROM added)""",
        # A finished invocation neither blocks nor waits any more.
        release_waiters=f"""
            DELETE FROM {wait}
            WHERE app_id = %s AND (waited_invocation_id = %s OR waiter_invocation_id = %s)""",
        # Driven from the waiting edges whatever the statistics say: the app's edges are
        # read once (MATERIALIZED), the invocations waited for that wait for nothing
        # themselves are their difference, and each is looked up by primary key in a
        # LATERAL subquery that LIMIT keeps from being pulled up into a join, so the plan
        # is a nested loop over the edges. Its cost follows the number of edges of the
        # app, never the number of queued invocations.
        blocking_invocations=f"""
            WITH edges AS MATERIALIZED (
                SELECT waiter_invocation_id, waited_invocation_id FROM {wait}
                WHERE app_id = %s
            ), waited AS (
                SELECT waited_invocation_id AS invocation_id FROM edges
                EXCEPT
                SELECT waiter_invocation_id FROM edges
            ), answer AS (
                SELECT i.invocation_id, i.registered_at
                FROM waited
                CROSS JOIN LATERAL (
                    SELECT o.invocation_id, o.registered_at, o.status FROM {inv} o
                    WHERE o.app_id = %s AND o.invocation_id = waited.invocation_id
                    LIMIT 1
                ) i
                WHERE i.status = ANY(%s::text[])
                ORDER BY i.registered_at, i.invocation_id
                LIMIT %s
            )
            -- At least one row: an empty answer still says whether the app had any edge.
            SELECT a.invocation_id, e.any_edge
            FROM (SELECT EXISTS (SELECT 1 FROM edges) AS any_edge) e
            LEFT JOIN answer a ON true
            ORDER BY a.registered_at, a.invocation_id""",
        # now() is when the statement's transaction began: one that waited for the row
        # lock behind a newer beat carries an older time, and greatest() keeps the newer
        # one. A stored beat ahead of the server's clock (the clock stepped back) comes
        # down to clock_timestamp(), which a late statement's never is below. No index
        # covers these columns, so the update is HOT.
        register_heartbeats=f"""
            INSERT INTO {beat} AS h (app_id, runner_id, can_run_atomic_service,
                                     consumed_queues, first_heartbeat_at, last_heartbeat_at)
            SELECT %s, u.runner_id, %s, coalesce(%s::text[], '{{}}'), now(), now()
            FROM unnest(%s::text[]) AS u(runner_id)
            ON CONFLICT (app_id, runner_id) DO UPDATE SET
                last_heartbeat_at = least(
                    greatest(h.last_heartbeat_at, excluded.last_heartbeat_at),
                    clock_timestamp()),
                can_run_atomic_service = excluded.can_run_atomic_service,
                consumed_queues = coalesce(%s::text[], h.consumed_queues)""",
        active_runners=f"""
            SELECT runner_id, first_heartbeat_at, last_heartbeat_at, can_run_atomic_service,
                   consumed_queues
            FROM {beat}
            WHERE app_id = %s AND last_heartbeat_at >= now() - {_SECONDS}
            ORDER BY first_heartbeat_at, runner_id""",
        active_runners_by_eligibility=f"""
            SELECT runner_id, first_heartbeat_at, last_heartbeat_at, can_run_atomic_service,
                   consumed_queues
            FROM {beat}
            WHERE app_id = %s AND last_heartbeat_at >= now() - {_SECONDS}
              AND can_run_atomic_service = %s
            ORDER BY first_heartbeat_at, runner_id""",
        pending_for_recovery=f"""
            SELECT invocation_id FROM {inv}
            WHERE app_id = %s AND status = 'pending' AND status_set_at <= now() - {_SECONDS}
            ORDER BY status_set_at""",
        # Taken from the queue that long ago and still runnable: the worker that took
        # it stopped before its next status change. Only invocations taken and not
        # moved on carry taken_at (every status change clears it, and so does routing
        # one again), so the partial index holds a handful of rows however long the
        # queue is, and no queue row needs to be looked up.
        stranded_for_recovery=f"""
            SELECT i.invocation_id, i.taken_at FROM {inv} i
            WHERE i.app_id = %s AND i.status = ANY(%s::text[])
              AND i.taken_at IS NOT NULL AND i.taken_at <= now() - {_SECONDS}
            ORDER BY i.taken_at""",
        # Routes again those of the stranded invocations whose trace is still the one
        # read (no status change or other recovery came in between), and clears it in
        # the same statement, so each is routed again once. Parameters: ids, their
        # taken_at, queues and priorities; app, runnable statuses; app; channel and
        # the payloads that wake the queues' consumers.
        route_stranded=f"""
            WITH u AS (
                SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::text[], %s::float8[])
                    WITH ORDINALITY AS u(invocation_id, taken_at, queue_name, priority, n)
            ), cleared AS (
                UPDATE {inv} i SET taken_at = NULL
                FROM u
                WHERE i.app_id = %s AND i.invocation_id = u.invocation_id
                  AND i.taken_at = u.taken_at AND i.status = ANY(%s::text[])
                RETURNING i.invocation_id
            ), routed AS (
                INSERT INTO {queue} (app_id, queue_name, priority, invocation_id)
                SELECT %s, u.queue_name, u.priority, u.invocation_id
                FROM u JOIN cleared c ON c.invocation_id = u.invocation_id
                ORDER BY u.n
            )
            SELECT c.invocation_id,
                   (SELECT count(pg_notify(%s, p)) FROM unnest(%s::text[]) AS p)
            FROM cleared c""",
        # RUNNING -> RUNNING_RECOVERY only while the owner is dead by pynenc's rule, in
        # the statement that moves it. FOR SHARE waits for a heartbeat being written and
        # reads it once committed, so an owner that beats again at that very moment keeps
        # its invocation. Parameters: the transition's, then the timeout in seconds.
        recover_running=f"""{transition}
              AND coalesce(
                  (SELECT h.last_heartbeat_at FROM {beat} h
                   WHERE h.app_id = {inv}.app_id AND h.runner_id = {inv}.status_owner_id
                   FOR SHARE),
                  '-infinity') < now() - {_SECONDS}
            RETURNING status_owner_id, status_set_at""",
        # pynenc's rule: the owner is dead when it has no heartbeat younger than the
        # timeout, or none at all.
        running_for_recovery=f"""
            SELECT i.invocation_id FROM {inv} i
            LEFT JOIN {beat} h ON h.app_id = i.app_id AND h.runner_id = i.status_owner_id
            WHERE i.app_id = %s AND i.status = 'running' AND i.status_owner_id IS NOT NULL
              AND (h.runner_id IS NULL OR h.last_heartbeat_at < now() - {_SECONDS})
            ORDER BY i.status_set_at""",
        # Frees the slot of a holder that is dead by pynenc's heartbeat rule; the row
        # stays, abandoned, as the record of what happened.
        abandon_dead_holder=f"""
            UPDATE {ase} AS e SET
                status = 'abandoned',
                end_time = clock_timestamp(),
                reason = format('holder_dead: runner %%s sent no heartbeat for %%s s',
                                e.runner_id, %s::float8)
            WHERE e.app_id = %s AND e.status = 'running'
              AND greatest(e.recorded_at,
                           (SELECT h.last_heartbeat_at FROM {beat} h
                            WHERE h.app_id = e.app_id AND h.runner_id = e.runner_id))
                  < now() - {_SECONDS}
            RETURNING e.atomic_service_run_id, e.runner_id""",
        # The partial unique index on (app_id) WHERE status = 'running' is the gate:
        # a concurrent start waits for the first to commit, then does nothing.
        start_running_execution=f"""
            INSERT INTO {ase} (app_id, atomic_service_run_id, runner_id, status, reason,
                               start_time)
            VALUES (%s, %s, %s, 'running', %s, coalesce(%s::timestamptz, clock_timestamp()))
            ON CONFLICT DO NOTHING
            RETURNING start_time""",
        running_execution=f"""
            SELECT atomic_service_run_id, runner_id FROM {ase}
            WHERE app_id = %s AND status = 'running'""",
        record_execution=f"""
            WITH at AS (SELECT coalesce(%s::timestamptz, clock_timestamp()) AS start_time)
            INSERT INTO {ase} AS e (app_id, atomic_service_run_id, runner_id, status, reason,
                                    start_time, end_time)
            SELECT %s, %s, %s, %s, %s, at.start_time,
                   CASE WHEN %s::boolean THEN at.start_time END
            FROM at
            ON CONFLICT (app_id, atomic_service_run_id) DO UPDATE SET
                runner_id = excluded.runner_id, status = excluded.status,
                reason = excluded.reason, start_time = excluded.start_time,
                end_time = excluded.end_time, recorded_at = now()
            WHERE e.status <> 'running'
            RETURNING start_time""",
        # The first terminal status wins; a run with no row gets one, start = end.
        finalize_execution=f"""
            WITH finished AS (
                UPDATE {ase} SET
                    end_time = %s, status = %s,
                    reason = CASE WHEN %s = '' THEN reason ELSE %s END
                WHERE app_id = %s AND atomic_service_run_id = %s AND status = 'running'
                RETURNING 1
            )
            INSERT INTO {ase} (app_id, atomic_service_run_id, runner_id, status, reason,
                               start_time, end_time)
            SELECT %s, %s, %s, %s, %s, %s, %s
            WHERE NOT EXISTS (SELECT 1 FROM finished)
            ON CONFLICT (app_id, atomic_service_run_id) DO NOTHING""",
        active_executions=f"""
            SELECT {ase_columns} FROM {ase}
            WHERE app_id = %s AND status = 'running' ORDER BY start_time DESC""",
        executions_in_timerange=f"""
            SELECT {ase_columns} FROM {ase}
            WHERE app_id = %s AND start_time <= %s AND coalesce(end_time, start_time) >= %s
              AND (%s::text IS NULL OR runner_id = %s)
              AND (%s::float8 <= 0 OR (end_time IS NOT NULL
                                       AND end_time - start_time >= {_SECONDS}))
            ORDER BY start_time DESC LIMIT %s""",
        # Retention is judged on the end time the runner reported; it decides how long
        # history is kept, never who holds the slot.
        purge_aged_executions=f"""
            DELETE FROM {ase}
            WHERE app_id = %s AND end_time IS NOT NULL AND end_time < now() - {_SECONDS}
              AND atomic_service_run_id <> ALL(%s::text[])""",
        purge_excess_executions=f"""
            DELETE FROM {ase} WHERE app_id = %s AND atomic_service_run_id IN (
                SELECT atomic_service_run_id FROM {ase}
                WHERE app_id = %s AND status <> 'running'
                  AND atomic_service_run_id <> ALL(%s::text[])
                ORDER BY start_time DESC, atomic_service_run_id DESC
                OFFSET %s)""",
        purge_app=tuple(
            f"DELETE FROM {table} WHERE app_id = %s" for table in (inv, arg, wait, beat, ase)
        ),
    )
