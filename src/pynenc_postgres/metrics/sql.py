"""Every statement the metrics exporter runs, written once per Postgres schema.

A scrape must stay cheap however many invocations the tables hold, so no statement
reads a table whole:

* the apps, queues and queue priorities present are found with loose index scans (a
  recursive query that jumps from one distinct key of an index to the next, one index
  probe per key), never with ``SELECT DISTINCT``;
* a count reads one range of an index: the invocations of one app in one *non-final*
  status (work in flight, not the finished invocations that retention keeps), the
  messages of one queue (the backlog), the runners of one app;
* finished, failed, retried and recovered invocations are read from the running totals
  of ``pynenc_history_counter`` (a few rows per app), not counted in the history;
* the oldest queued invocation of a queue is the head of each of its priorities (one
  probe each), not a ``min()`` over the queue;
* table sizes and row estimates come from the server's statistics, by table name.

Every age is measured on the server's clock (``now()``), like the orchestrator's.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from pynenc_postgres.db import tables as t
from pynenc_postgres.db.sql import quote_ident

FINAL_STATUSES = ("success", "failed", "concurrency_controlled_final")
"""pynenc's final statuses: counted in the history totals, never in the tables."""

ACTIVE_STATUSES = (
    "registered",
    "concurrency_controlled",
    "rerouted",
    "pending",
    "pending_recovery",
    "running",
    "running_recovery",
    "paused",
    "killed",
    "retry",
)
"""pynenc's other statuses: invocations in them are counted on every scrape."""

COUNTED_STATUSES = (*FINAL_STATUSES, "retry", "pending_recovery", "running_recovery")
"""Statuses whose history rows the trigger of migration 0009 adds up."""

TABLES: tuple[str, ...] = (
    *t.STATE_TABLES,
    t.BROKER_MESSAGE,
    t.CLIENT_DATA,
    *t.TRIGGER_TABLES,
    *t.ORCHESTRATOR_TABLES,
    *t.RETENTION_TABLES,
)
"""Every table whose size, live and dead rows are reported."""

# ``%s`` seconds as an interval, for comparisons with the server clock.
_SECONDS = "make_interval(secs => %s::float8)"


def _distinct_apps(table: str) -> str:
    """A recursive CTE ``apps(app_id)``: the distinct apps of ``table``, one probe each.

    Every primary key starts with ``app_id``; each step asks the index for the first
    app after the previous one. The last row is NULL and must be filtered out.
    """
    return f"""apps(app_id) AS (
            (SELECT app_id FROM {table} ORDER BY app_id LIMIT 1)
            UNION ALL
            SELECT (SELECT x.app_id FROM {table} x WHERE x.app_id > a.app_id
                    ORDER BY x.app_id LIMIT 1)
            FROM apps a WHERE a.app_id IS NOT NULL
        )"""


@dataclass(frozen=True)
class MetricsSql:
    """SQL text for one schema; parameters use psycopg's ``%s`` placeholders."""

    invocations: str
    """Per app and active status: invocations, and for ``running`` those whose owner is
    dead. Parameters: the statuses, the dead-after seconds."""
    queues: str
    """Per app and queue with waiting messages: depth and age of the oldest, in seconds."""
    runners: str
    """Per app: runners alive and dead, and the queues the live ones consume.
    Parameters: the dead-after seconds, twice."""
    atomic_service: str
    """Per app with a holder: seconds since its latest sign of life."""
    history_totals: str
    """Per app and counted status: the history rows inserted since the counter exists."""
    retention: str
    """Per app with a recorded retention run: the latest run's outcome, when it ended (or
    started, while it runs), its rows removed per table (JSON)."""
    retention_behind: str
    """Per app with a retention schedule: seconds its next run is overdue (0 if not)."""
    tables: str
    """Per table: bytes on disk (indexes and TOAST included), live and dead rows (the
    server's estimates) and the latest vacuum. Parameters: the schema, the table names."""


@cache
def statements(schema: str) -> MetricsSql:
    """Render the statements for ``schema`` (cached: built once per process and schema)."""
    s = quote_ident(schema)
    inv = f"{s}.{t.ORCHESTRATOR_INVOCATION}"
    beat = f"{s}.{t.RUNNER_HEARTBEAT}"
    queue = f"{s}.{t.BROKER_MESSAGE}"
    ase = f"{s}.{t.ATOMIC_SERVICE_EXECUTION}"
    counter = f"{s}.{t.HISTORY_COUNTER}"
    run = f"{s}.{t.RETENTION_RUN}"
    sched = f"{s}.{t.RETENTION_SCHEDULE}"
    head = "app_id, queue_name, priority, routed_at"
    return MetricsSql(
        # Each count is one range of (app_id, status, status_set_at); only running
        # invocations are joined with their owner's heartbeat, by primary key. The
        # owner is dead by pynenc's rule, as the running-recovery statement applies it.
        invocations=f"""
            WITH RECURSIVE {_distinct_apps(inv)}
            SELECT a.app_id, st.status,
                   (SELECT count(*) FROM {inv} i
                    WHERE i.app_id = a.app_id AND i.status = st.status),
                   CASE WHEN st.status = 'running' THEN (
                       SELECT count(*) FROM {inv} i
                       LEFT JOIN {beat} h
                         ON h.app_id = i.app_id AND h.runner_id = i.status_owner_id
                       WHERE i.app_id = a.app_id AND i.status = 'running'
                         AND i.status_owner_id IS NOT NULL
                         AND (h.runner_id IS NULL
                              OR h.last_heartbeat_at < now() - {_SECONDS}))
                   END
            FROM apps a CROSS JOIN unnest(%s::text[]) AS st(status)
            WHERE a.app_id IS NOT NULL
            ORDER BY a.app_id, st.status""",
        # A loose scan of (app_id, queue_name, priority DESC, message_id), the claim's
        # index: from each queue priority's head (its lowest message_id, routed first)
        # to the next priority of the queue, or else to the first of the next queue.
        queues=f"""
            WITH RECURSIVE heads AS (
                (SELECT {head} FROM {queue}
                 ORDER BY app_id, queue_name, priority DESC, message_id LIMIT 1)
                UNION ALL
                SELECT n.app_id, n.queue_name, n.priority, n.routed_at
                FROM heads c CROSS JOIN LATERAL (
                    (SELECT {head} FROM {queue} x
                     WHERE x.app_id = c.app_id AND x.queue_name = c.queue_name
                       AND x.priority < c.priority
                     ORDER BY x.priority DESC, x.message_id LIMIT 1)
                    UNION ALL
                    (SELECT {head} FROM {queue} x
                     WHERE (x.app_id, x.queue_name) > (c.app_id, c.queue_name)
                     ORDER BY x.app_id, x.queue_name, x.priority DESC, x.message_id
                     LIMIT 1)
                    LIMIT 1
                ) n
            ), queues AS (
                SELECT app_id, queue_name, min(routed_at) AS oldest
                FROM heads GROUP BY app_id, queue_name
            )
            SELECT q.app_id, q.queue_name,
                   (SELECT count(*) FROM {queue} m
                    WHERE m.app_id = q.app_id AND m.queue_name = q.queue_name),
                   greatest(extract(epoch FROM now() - q.oldest), 0)::float8
            FROM queues q
            ORDER BY q.app_id, q.queue_name""",
        # Two ranges of (app_id, last_heartbeat_at) per app.
        runners=f"""
            WITH RECURSIVE {_distinct_apps(beat)}
            SELECT a.app_id,
                   (SELECT count(*) FROM {beat} h
                    WHERE h.app_id = a.app_id AND h.last_heartbeat_at >= now() - {_SECONDS}),
                   (SELECT count(*) FROM {beat} h
                    WHERE h.app_id = a.app_id AND h.last_heartbeat_at < now() - {_SECONDS}),
                   ARRAY(SELECT DISTINCT q.name FROM {beat} h, unnest(h.consumed_queues) q(name)
                         WHERE h.app_id = a.app_id
                           AND h.last_heartbeat_at >= now() - {_SECONDS}
                         ORDER BY q.name)
            FROM apps a WHERE a.app_id IS NOT NULL
            ORDER BY a.app_id""",
        # The holder of each app's slot is its one running execution (a partial unique
        # index); it is judged as the orchestrator judges it: by its latest heartbeat,
        # and never before its execution was recorded.
        atomic_service=f"""
            WITH RECURSIVE {_distinct_apps(ase)}
            SELECT e.app_id,
                   greatest(extract(epoch FROM now() - greatest(
                       e.recorded_at, (SELECT h.last_heartbeat_at FROM {beat} h
                                       WHERE h.app_id = e.app_id
                                         AND h.runner_id = e.runner_id))), 0)::float8
            FROM apps a JOIN {ase} e ON e.app_id = a.app_id AND e.status = 'running'
            ORDER BY e.app_id""",
        history_totals=f"""
            SELECT app_id, status, sum(total)::bigint FROM {counter}
            GROUP BY app_id, status ORDER BY app_id, status""",
        # Each app's latest run: one probe of (app_id, started_at) per app.
        retention=f"""
            WITH RECURSIVE {_distinct_apps(run)}
            SELECT a.app_id, r.outcome,
                   extract(epoch FROM coalesce(r.finished_at, r.started_at))::float8,
                   r.rows_removed
            FROM apps a CROSS JOIN LATERAL (
                SELECT x.outcome, x.started_at, x.finished_at, x.rows_removed FROM {run} x
                WHERE x.app_id = a.app_id ORDER BY x.started_at DESC LIMIT 1
            ) r
            WHERE a.app_id IS NOT NULL
            ORDER BY a.app_id""",
        # One row per app.
        retention_behind=f"""
            SELECT app_id, greatest(extract(epoch FROM now() - due_at), 0)::float8
            FROM {sched} ORDER BY app_id""",
        # By name through pg_class's unique index. A partitioned table has no storage of
        # its own: its partitions (pg_partition_tree's leaves) hold the rows and bytes.
        tables="""
            SELECT c.relname,
                   sum(pg_total_relation_size(p.relid))::bigint,
                   sum(pg_stat_get_live_tuples(p.relid))::bigint,
                   sum(pg_stat_get_dead_tuples(p.relid))::bigint,
                   extract(epoch FROM max(greatest(pg_stat_get_last_vacuum_time(p.relid),
                                                   pg_stat_get_last_autovacuum_time(p.relid))))
            FROM pg_catalog.pg_class c
            JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            CROSS JOIN LATERAL (
                SELECT t.relid FROM pg_catalog.pg_partition_tree(c.oid) t WHERE t.isleaf
                UNION ALL
                SELECT c.oid WHERE c.relkind = 'r'
            ) p(relid)
            WHERE n.nspname = %s AND c.relname = ANY(%s::text[])
            GROUP BY c.relname
            ORDER BY c.relname""",
    )
