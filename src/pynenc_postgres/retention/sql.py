"""Every statement retention runs, written once per Postgres schema.

A batch names its invocations once (``%(ids)s``); every table that holds a row because
of an invocation is listed in :data:`INVOCATION_ROWS` with the condition that finds
those rows, so the purge of a batch, its dry run and the test that looks for orphans
all read the same list.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from pynenc_postgres.db import tables as t
from pynenc_postgres.db.sql import qualified

CLIENT_DATA_PREFIX = "__pynenc__client_data__:"
"""How pynenc's client data store marks a reference to a stored value."""

_CLIENT_DATA_KEY = "__pynenc__client_data__:[0-9a-f]{64}"

INVOCATION_ROWS: tuple[tuple[str, str], ...] = (
    (t.INVOCATION_HISTORY, "invocation_id = ANY(%(ids)s)"),
    (t.INVOCATION_RESULT, "invocation_id = ANY(%(ids)s)"),
    (t.INVOCATION_EXCEPTION, "invocation_id = ANY(%(ids)s)"),
    # Membership as a step, and the membership list of a workflow defined by it.
    (
        t.WORKFLOW_SUB_INVOCATION,
        "(sub_invocation_id = ANY(%(ids)s) OR workflow_id = ANY(%(ids)s))",
    ),
    (t.WORKFLOW_DATA, "workflow_id = ANY(%(ids)s)"),
    (t.WORKFLOW_RUN, "workflow_id = ANY(%(ids)s)"),
    (t.INVOCATION, "invocation_id = ANY(%(ids)s)"),
    (t.ORCHESTRATOR_INVOCATION, "invocation_id = ANY(%(ids)s)"),
    (t.ORCHESTRATOR_ARGUMENT, "invocation_id = ANY(%(ids)s)"),
    (
        t.ORCHESTRATOR_WAITING,
        "(waiter_invocation_id = ANY(%(ids)s) OR waited_invocation_id = ANY(%(ids)s))",
    ),
    # The queue table holds only what waits to run, so it is small: no index on the
    # invocation id (which every routing would pay for), the app's range is read.
    (t.BROKER_MESSAGE, "invocation_id = ANY(%(ids)s)"),
)
"""(table, condition) of every row that exists because of one of the invocations ``ids``."""

CLIENT_DATA_SOURCES: tuple[tuple[str, str], ...] = (
    (t.INVOCATION, "serialized_arguments"),
    (t.INVOCATION_RESULT, "serialized_result"),
    (t.INVOCATION_EXCEPTION, "serialized_exception"),
    (t.ORCHESTRATOR_ARGUMENT, "serialized_value"),
    (t.WORKFLOW_DATA, "serialized_value"),
)
"""(table, column) of a batch's rows that may refer to client data: each table is one of
:data:`INVOCATION_ROWS`, so the batch's DELETE of it returns the column."""

CLIENT_DATA_REFERRERS: tuple[tuple[str, str], ...] = (
    *CLIENT_DATA_SOURCES,
    (t.TRIGGER_CONDITION, "condition_json"),
    (t.TRIGGER_DEFINITION, "argument_provider_json"),
    (t.TRIGGER_VALID_CONDITION, "valid_condition_json"),
    (t.TRIGGER_EVENT, "event_json"),
    (t.TRIGGER_RUN, "trigger_run_json"),
)
"""Every column whose value may be, or embed, a client-data reference: a stored value
that one of them still names stays."""

RUNNER_CONTEXT_REFERRERS: tuple[tuple[str, str], ...] = (
    (t.INVOCATION_HISTORY, "runner_id"),
    (t.RUNNER_CONTEXT, "parent_runner_id"),
    (t.ATOMIC_SERVICE_EXECUTION, "runner_id"),
    (t.TRIGGER_EVENT, "emitted_by_runner_context_id"),
)
"""Columns that name a runner context: a context that one of them names stays."""


@dataclass(frozen=True)
class RetentionSql:
    """SQL text for one schema; parameters are named (``%(app_id)s``)."""

    lock_timeout: str
    history_candidates: str
    orchestrator_candidates: str
    marked_candidates: str
    purge_batch: str
    """One statement that deletes the batch's rows from every table of
    :data:`INVOCATION_ROWS` and answers with a count per table (in that order), the
    client-data keys the deleted rows named, and (when ``%(memberships)s``) the workflow
    memberships deleted, as ``[workflow_id, sub_invocation_id]`` pairs."""
    client_data: str
    dead_heartbeats: str
    runner_contexts: str
    server_now: str
    record_command: str
    record_progress: str
    record_end: str
    record_failure: str
    trim_records: str
    claim: str
    last_runs: str


def _candidates(schema: str) -> str:
    hist = qualified(schema, t.INVOCATION_HISTORY)
    # The scan walks the (app_id, recorded_at, invocation_id, status) index from the
    # cursor, which is unique (the primary key's columns). The NOT EXISTS probe of the
    # primary key (app_id, invocation_id, recorded_at >= the row's) keeps only each
    # invocation's latest row in write order, so an invocation whose status moved on,
    # even within the same microsecond, is never in scope.
    return f"""
        SELECT h.recorded_at, h.invocation_id, h.status,
               NOT EXISTS (
                   SELECT 1 FROM {hist} later
                   WHERE later.app_id = h.app_id AND later.invocation_id = h.invocation_id
                     AND (later.recorded_at, later.write_order, later.status)
                         > (h.recorded_at, h.write_order, h.status)
               ) AS is_latest
        FROM {hist} h
        WHERE h.app_id = %(app_id)s AND h.recorded_at < %(cutoff)s
          AND (h.recorded_at, h.invocation_id, h.status)
              > (%(after_at)s, %(after_id)s, %(after_status)s)
          AND h.status = ANY(%(statuses)s)
        ORDER BY h.recorded_at, h.invocation_id, h.status
        LIMIT %(limit)s"""


def _purge_batch(schema: str) -> str:
    data = qualified(schema, t.CLIENT_DATA)
    sources = dict(CLIENT_DATA_SOURCES)
    # Only an app that has stored client data can name some: otherwise no value is
    # examined (a value inlined without a store can be large). The probe reads the
    # primary key's first entry for the app, once per statement.
    any_data = f"EXISTS (SELECT 1 FROM {data} WHERE app_id = %(app_id)s)"
    ctes = []
    for k, (table, condition) in enumerate(INVOCATION_ROWS):
        column = sources.get(table)
        if table == t.WORKFLOW_SUB_INVOCATION:
            returning = "workflow_id, sub_invocation_id"
        elif column is not None:
            # The row's value when it may name a stored value, else NULL.
            returning = (
                f"CASE WHEN {any_data} THEN CASE WHEN strpos({column}, "
                f"'{CLIENT_DATA_PREFIX}') > 0 THEN {column} END END AS v"
            )
        else:
            returning = "1"
        ctes.append(
            f"d{k} AS (DELETE FROM {qualified(schema, table)} "
            f"WHERE app_id = %(app_id)s AND {condition} RETURNING {returning})"
        )
    counts = ", ".join(f"(SELECT count(*) FROM d{k})" for k in range(len(INVOCATION_ROWS)))
    values = " UNION ALL ".join(
        f"SELECT v FROM d{k}" for k, (table, _) in enumerate(INVOCATION_ROWS) if table in sources
    )
    membership = next(
        k for k, (table, _) in enumerate(INVOCATION_ROWS) if table == t.WORKFLOW_SUB_INVOCATION
    )
    # Every table's rows go in one statement (one round trip, the ids sent once), and the
    # values that may name client data come back from the DELETEs themselves instead of
    # being read before them. The parts share one snapshot; no foreign key or trigger
    # links these tables, so their order does not matter.
    joined = ",\n             ".join(ctes)
    return f"""
        WITH {joined}
        SELECT {counts},
            ARRAY(SELECT DISTINCT m.key[1] FROM ({values}) s
                  CROSS JOIN LATERAL regexp_matches(s.v, '{_CLIENT_DATA_KEY}', 'g') AS m(key)
                  WHERE s.v IS NOT NULL),
            CASE WHEN %(memberships)s
                 THEN ARRAY(SELECT ARRAY[workflow_id, sub_invocation_id] FROM d{membership})
            END"""


@cache
def statements(schema: str) -> RetentionSql:
    """Render the statements for ``schema`` (cached: built once per process and schema)."""
    q = qualified
    orch = q(schema, t.ORCHESTRATOR_INVOCATION)
    data = q(schema, t.CLIENT_DATA)
    beat = q(schema, t.RUNNER_HEARTBEAT)
    ctx = q(schema, t.RUNNER_CONTEXT)
    sched = q(schema, t.RETENTION_SCHEDULE)
    run = q(schema, t.RETENTION_RUN)
    still_named = "".join(
        f"""
              AND NOT EXISTS (SELECT 1 FROM {q(schema, table)} r
                              WHERE r.app_id = c.app_id AND strpos(r.{column}, c.data_key) > 0)"""
        for table, column in CLIENT_DATA_REFERRERS
    )
    context_named = "".join(
        f"""
              AND NOT EXISTS (SELECT 1 FROM {q(schema, table)} r
                              WHERE r.app_id = c.app_id AND r.{column} = c.runner_id)"""
        for table, column in RUNNER_CONTEXT_REFERRERS
    )
    record_columns = "invocations, batches, batches_blocked, rows_removed"
    return RetentionSql(
        lock_timeout="SELECT set_config('lock_timeout', %(lock_timeout)s, true)",
        history_candidates=_candidates(schema),
        # Invocations the orchestrator holds final for longer than the window: those the
        # state backend has no history for (another state backend, or rows left by an
        # older purge). A range of (app_id, status, status_set_at), the server's clock.
        orchestrator_candidates=f"""
            SELECT status_set_at, invocation_id FROM {orch}
            WHERE app_id = %(app_id)s AND status = %(status)s
              AND status_set_at < %(cutoff)s
              AND (status_set_at, invocation_id) > (%(after_at)s, %(after_id)s)
            ORDER BY status_set_at, invocation_id
            LIMIT %(limit)s""",
        # Invocations set up for pynenc's auto purge (set_up_invocation_auto_purge) that
        # long ago, whatever their status: pynenc's own rule for auto_purge().
        marked_candidates=f"""
            SELECT purgeable_since, invocation_id FROM {orch}
            WHERE app_id = %(app_id)s AND purgeable_since <= %(cutoff)s
              AND (purgeable_since, invocation_id) > (%(after_at)s, %(after_id)s)
            ORDER BY purgeable_since, invocation_id
            LIMIT %(limit)s""",
        purge_batch=_purge_batch(schema),
        # A value stored (or stored again) after the keep_after moment may belong to an
        # invocation being submitted right now: it stays until a later run.
        client_data=f"""
            DELETE FROM {data} c
            WHERE c.app_id = %(app_id)s AND c.data_key = ANY(%(keys)s)
              AND c.stored_at < %(keep_after)s{still_named}
            RETURNING c.data_key""",
        dead_heartbeats=f"""
            DELETE FROM {beat}
            WHERE app_id = %(app_id)s
              AND last_heartbeat_at < now() - make_interval(secs => %(seconds)s)""",
        # A context stays while a row names it, while it or its parent still has a
        # heartbeat row (a live runner writes history with it later), and while it is
        # younger than the cutoff (stored just before its first history row).
        runner_contexts=f"""
            DELETE FROM {ctx} c
            WHERE c.app_id = %(app_id)s AND c.created_at < %(cutoff)s{context_named}
              AND NOT EXISTS (SELECT 1 FROM {beat} b
                              WHERE b.app_id = c.app_id
                                AND b.runner_id IN (c.runner_id, c.parent_runner_id))""",
        server_now="SELECT now()",
        record_command=f"""
            INSERT INTO {run} (app_id, run_id, kind, runner_id, policy, outcome)
            VALUES (%(app_id)s, %(run_id)s, 'command', NULL, %(policy)s, 'running')
            ON CONFLICT (app_id, run_id) DO NOTHING""",
        record_progress=f"""
            UPDATE {run} SET ({record_columns}) =
                (%(invocations)s, %(batches)s, %(batches_blocked)s, %(rows_removed)s)
            WHERE app_id = %(app_id)s AND run_id = %(run_id)s""",
        record_end=f"""
            UPDATE {run} SET ({record_columns}) =
                (%(invocations)s, %(batches)s, %(batches_blocked)s, %(rows_removed)s),
                outcome = %(outcome)s, error = %(error)s, finished_at = now()
            WHERE app_id = %(app_id)s AND run_id = %(run_id)s""",
        record_failure=f"""
            UPDATE {run} SET outcome = 'failed', error = %(error)s, finished_at = now()
            WHERE app_id = %(app_id)s AND run_id = %(run_id)s AND outcome = 'running'""",
        # The record stays bounded too: an app keeps its latest runs only.
        trim_records=f"""
            DELETE FROM {run}
            WHERE app_id = %(app_id)s AND started_at < (
                SELECT started_at FROM {run} WHERE app_id = %(app_id)s
                ORDER BY started_at DESC OFFSET %(keep)s LIMIT 1)""",
        # One statement decides, on the server's clock, whether this runner runs the
        # app's retention now: the row moves one interval ahead only if it was due, by
        # its due_at or, when a shorter interval is configured now, by the latest claim
        # plus that interval. A concurrent claim waits for the row and then finds it no
        # longer due (both conditions compare with the claim's time, never with the
        # other transaction's now(), which may be a little earlier or later). The
        # answer always tells the caller how long until the next run is due.
        claim=f"""
            WITH claimed AS (
                INSERT INTO {sched} AS s (app_id, due_at, last_run_id, last_claimed_by,
                                          last_claimed_at)
                VALUES (%(app_id)s, now() + make_interval(secs => %(interval)s),
                        %(run_id)s, %(runner_id)s, now())
                ON CONFLICT (app_id) DO UPDATE SET
                    due_at = excluded.due_at,
                    last_run_id = excluded.last_run_id,
                    last_claimed_by = excluded.last_claimed_by,
                    last_claimed_at = excluded.last_claimed_at
                WHERE s.due_at <= now()
                   OR s.last_claimed_at + make_interval(secs => %(interval)s) <= now()
                   -- resent after a lost reply: the claim recognises its own run id
                   OR s.last_run_id = excluded.last_run_id
                RETURNING s.app_id, s.due_at
            ), started AS (
                INSERT INTO {run} (app_id, run_id, kind, runner_id, policy, outcome)
                SELECT app_id, %(run_id)s, 'scheduled', %(runner_id)s, %(policy)s, 'running'
                FROM claimed
                ON CONFLICT (app_id, run_id) DO NOTHING
            )
            SELECT true, extract(epoch FROM c.due_at - now())::float8 FROM claimed c
            UNION ALL
            SELECT false, extract(epoch FROM s.due_at - now())::float8 FROM {sched} s
            WHERE s.app_id = %(app_id)s AND NOT EXISTS (SELECT 1 FROM claimed)""",
        last_runs=f"""
            SELECT app_id, run_id, kind, runner_id, policy, started_at, finished_at, outcome,
                   invocations, batches, batches_blocked, rows_removed, error
            FROM {run}
            WHERE (%(app_id)s::text IS NULL OR app_id = %(app_id)s)
            ORDER BY started_at DESC, run_id DESC
            LIMIT %(limit)s""",
    )
