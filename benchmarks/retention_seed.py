"""A day of finished invocations, written server-side, and a partitioned copy of its tables.

:func:`seed_day` writes N invocations spread evenly over the day two days before
today (server clock): per invocation the ``pynenc_invocation`` row, five history rows
(registered, rerouted, pending, running, success, 10 ms apart; a tiny task of the soak
writes four, a retried one seven or more), the result and the orchestrator's row
(final, ``purgeable_since`` set); the broker's row of a finished invocation is gone,
and a task that is not a workflow's root writes no workflow rows. One ``INSERT ...
SELECT generate_series`` per table, with the history counter's trigger skipped
(``session_replication_role = replica``): its totals are not what retention is
measured on, and it would be half the seeding time.

:func:`create_partitioned_copy` builds, in schema ``retention_partitioned``, the tables
that a day of invocations fills, with the same columns and indexes, each partitioned
by day on its time column, with partitions for 14 past days (that day among them),
today and tomorrow. The
primary key of a partitioned table must contain the partition column: it is added
where the key does not have it (so the invocation and the orchestrator row are no
longer unique by id alone, which ``ON CONFLICT (app_id, invocation_id)`` relies on).
"""

from __future__ import annotations

from typing import Any

import psycopg

APP = "retention-bench"
PARTITIONED_SCHEMA = "retention_partitioned"

# Table -> its time column, the partition key of its copy.
PARTITIONED_TABLES = {
    "pynenc_invocation_history": "recorded_at",
    "pynenc_invocation": "created_at",
    "pynenc_invocation_result": "stored_at",
    "pynenc_orchestrator_invocation": "registered_at",
}
SEEDED_TABLES = tuple(PARTITIONED_TABLES)
HISTORY_STATUSES = ("registered", "rerouted", "pending", "running", "success")

_DAY = "date_trunc('day', now()) - interval '2 days'"
# The day seeded: %(days_ago)s days before today (2 unless asked otherwise).
_SEEDED_DAY = "date_trunc('day', now()) - %(days_ago)s * interval '1 day'"
_TODAY = "date_trunc('day', now())"

# %(lo)s..%(hi)s are the invocation numbers; invocation i starts at day + (i - first)
# * step, the day's invocations spread over its 86,400 seconds.
_ROWS = f"""
    FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS i,
         LATERAL (SELECT md5(%(app)s || ':' || i) AS id,
                         {_SEEDED_DAY} + (i - %(lo)s) * (interval '86400 seconds' / %(n)s)
                             AS ts,
                         'shop.tasks.process_order_' || (i %% 8) AS task) AS v"""

SEED_SQL = {
    "pynenc_invocation": """
        INSERT INTO {s}.pynenc_invocation (app_id, invocation_id, task_id, call_id,
            arguments_id, serialized_arguments, workflow_id, workflow_type_key,
            created_at, updated_at)
        SELECT %(app)s, v.id, v.task, v.task || ':' || md5(i::text), md5(i::text),
               '{{"order_id": "' || i || '", "customer": "\\"customer-' || (i %% 5000)
               || '\\"", "amount": "' || (i %% 997) || '.50"}}',
               v.id, v.task, v.ts, v.ts + interval '40 milliseconds'""",
    "pynenc_invocation_history": """
        INSERT INTO {s}.pynenc_invocation_history (app_id, invocation_id, recorded_at, status,
            status_owner_id, status_set_at, runner_id, registered_by_invocation_id)
        SELECT %(app)s, v.id, v.ts + s.k * interval '10 milliseconds', s.status,
               CASE WHEN s.k >= 2 THEN 'runner-' || (i %% 16) END,
               v.ts + s.k * interval '10 milliseconds', 'runner-' || (i %% 16), NULL""",
    "pynenc_invocation_result": """
        INSERT INTO {s}.pynenc_invocation_result (app_id, invocation_id, serialized_result,
            stored_at)
        SELECT %(app)s, v.id, '{{"status": "shipped", "order_id": ' || i || '}}',
               v.ts + interval '40 milliseconds'""",
    "pynenc_orchestrator_invocation": """
        INSERT INTO {s}.pynenc_orchestrator_invocation (app_id, invocation_id, task_id,
            call_id, status, status_owner_id, status_set_at, status_change_id, retries,
            registered_at, purgeable_since)
        SELECT %(app)s, v.id, v.task, v.task || ':' || md5(i::text), 'success',
               'runner-' || (i %% 16), v.ts + interval '40 milliseconds', md5(v.id), 0,
               v.ts, v.ts + interval '40 milliseconds'""",
}
_HISTORY_FROM = (
    _ROWS + ", (VALUES " + ", ".join(f"({k}, '{s}')" for k, s in enumerate(HISTORY_STATUSES))
) + ") AS s(k, status)"

# Live invocations of today (the probe's): registered, pending and running, no result.
LIVE_SQL = {
    "pynenc_invocation": """
        INSERT INTO {s}.pynenc_invocation (app_id, invocation_id, task_id, call_id,
            arguments_id, serialized_arguments, workflow_id, workflow_type_key, created_at)
        SELECT %(app)s, 'live-' || i, 'shop.tasks.live', 'shop.tasks.live:' || i, md5(i::text),
               '{{}}', 'live-' || i, 'shop.tasks.live', {today} + i * interval '1 millisecond'
        FROM generate_series(1, %(n)s) AS i""",
    "pynenc_invocation_history": """
        INSERT INTO {s}.pynenc_invocation_history (app_id, invocation_id, recorded_at, status,
            status_owner_id, status_set_at, runner_id)
        SELECT %(app)s, 'live-' || i,
               {today} + i * interval '1 millisecond' + k * interval '1 microsecond',
               s, 'runner-0', {today}, 'runner-0'
        FROM generate_series(1, %(n)s) AS i,
             unnest(ARRAY['registered', 'pending', 'running']) WITH ORDINALITY AS u(s, k)""",
    "pynenc_orchestrator_invocation": """
        INSERT INTO {s}.pynenc_orchestrator_invocation (app_id, invocation_id, task_id,
            call_id, status, status_owner_id, status_set_at, registered_at)
        SELECT %(app)s, 'live-' || i, 'shop.tasks.live', 'shop.tasks.live:' || i, 'running',
               'runner-0', {today}, {today} + i * interval '1 millisecond'
        FROM generate_series(1, %(n)s) AS i""",
}


def seed_day(
    conn: psycopg.Connection[Any],
    schema: str,
    invocations: int,
    offset: int = 0,
    days_ago: int = 2,
) -> None:
    """Write a day of ``invocations`` finished invocations (numbers from ``offset``).

    :param days_ago: the day, counted back from today's start (server clock).
    """
    params = {
        "app": APP,
        "lo": offset,
        "hi": offset + invocations - 1,
        "n": invocations,
        "days_ago": days_ago,
    }
    conn.execute("SET session_replication_role = replica")
    try:
        for table, statement in SEED_SQL.items():
            tail = _HISTORY_FROM if table == "pynenc_invocation_history" else _ROWS
            conn.execute((statement + tail).format(s=schema), params)
    finally:
        conn.execute("RESET session_replication_role")


def seed_live(conn: psycopg.Connection[Any], schema: str, invocations: int) -> list[str]:
    """Write ``invocations`` live invocations of today; their ids."""
    for statement in LIVE_SQL.values():
        conn.execute(statement.format(s=schema, today=_TODAY), {"app": APP, "n": invocations})
    return [f"live-{i}" for i in range(1, invocations + 1)]


def create_partitioned_copy(conn: psycopg.Connection[Any], days_kept: int = 14) -> None:
    """The partitioned copy of :data:`PARTITIONED_TABLES` (see the module docstring).

    :param days_kept: partitions of past days per table, as a retention window of that
        many days keeps (all empty but the seeded day's), plus today's and tomorrow's: a
        lookup by invocation id, which names no time, probes every one of them.
    """
    s = PARTITIONED_SCHEMA
    conn.execute(f"DROP SCHEMA IF EXISTS {s} CASCADE")
    conn.execute(f"CREATE SCHEMA {s}")
    for table, column in PARTITIONED_TABLES.items():
        conn.execute(
            f"CREATE TABLE {s}.{table} (LIKE public.{table} INCLUDING DEFAULTS "
            f"INCLUDING IDENTITY) PARTITION BY RANGE ({column})"
        )
        key = conn.execute(
            """SELECT array_agg(a.attname ORDER BY k.ord)
               FROM pg_index i
               CROSS JOIN unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
               WHERE i.indrelid = %s::regclass AND i.indisprimary""",
            (f"public.{table}",),
        ).fetchone()
        columns: list[str] = list(key[0]) if key else []
        if column not in columns:
            columns.append(column)
        conn.execute(f"ALTER TABLE {s}.{table} ADD PRIMARY KEY ({', '.join(columns)})")
        indexes = conn.execute(
            """SELECT indexdef FROM pg_indexes i
               JOIN pg_class c ON c.relname = i.indexname
               JOIN pg_index x ON x.indexrelid = c.oid
               WHERE i.schemaname = 'public' AND i.tablename = %s AND NOT x.indisprimary""",
            (table,),
        ).fetchall()
        for (definition,) in indexes:
            conn.execute(definition.replace(f" ON public.{table} ", f" ON {s}.{table} ", 1))
        past = [f"{_TODAY} - interval '{d} days'" for d in range(max(days_kept, 2), 0, -1)]
        for day in (*past, _TODAY, f"{_TODAY} + interval '1 day'"):
            name = conn.execute(f"SELECT to_char({day}, 'YYYYMMDD')").fetchone()
            assert name is not None
            conn.execute(
                f"CREATE TABLE {s}.{table}_d{name[0]} PARTITION OF {s}.{table} "
                f"FOR VALUES FROM ({day}) TO ({day} + interval '1 day')"
            )


def day_partitions(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    """(parent, partition) of the seeded day, one per partitioned table."""
    name = conn.execute(f"SELECT to_char({_DAY}, 'YYYYMMDD')").fetchone()
    assert name is not None
    return [(table, f"{table}_d{name[0]}") for table in PARTITIONED_TABLES]


def drop_day_partitions(conn: psycopg.Connection[Any], dry_run: bool = False) -> list[str]:
    """Retention of the day: detach each of its partitions concurrently, then drop it."""
    s = PARTITIONED_SCHEMA
    dropped = []
    for parent, partition in day_partitions(conn):
        if not dry_run:
            # CONCURRENTLY takes only a SHARE UPDATE EXCLUSIVE lock on the parent: inserts
            # and updates of the other partitions go on while it waits for older snapshots.
            conn.execute(f"ALTER TABLE {s}.{parent} DETACH PARTITION {s}.{partition} CONCURRENTLY")
            conn.execute(f"DROP TABLE {s}.{partition}")
        dropped.append(partition)
    return dropped


def table_sizes(
    conn: psycopg.Connection[Any], schema: str, heap_only: bool = False
) -> dict[str, int]:
    """Bytes of each seeded table (heap, indexes, TOAST; partitions summed).

    :param heap_only: the rows' pages alone, without indexes and TOAST.
    """
    size = "pg_relation_size" if heap_only else "pg_total_relation_size"
    out = {}
    for table in SEEDED_TABLES:
        row = conn.execute(
            f"""SELECT coalesce(sum({size}(c.oid)), 0)::bigint
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = %s AND c.relkind IN ('r', 'p')
                 AND (c.relname = %s OR c.oid IN (
                      SELECT inhrelid FROM pg_inherits
                      WHERE inhparent = to_regclass(%s)))""",
            (schema, table, f"{schema}.{table}"),
        ).fetchone()
        out[table] = int(row[0]) if row else 0
    return out
