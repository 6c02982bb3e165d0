"""A cluster's worth of rows for the metrics exporter, written server-side.

The exporter reads the orchestrator's invocations, the broker's queue, the runners'
heartbeats, the atomic-service executions and the history totals; it never reads
``pynenc_invocation`` or the history itself (the EXPLAIN test shows it). So a seeded
cluster of N invocations needs N rows in ``pynenc_orchestrator_invocation`` and the
queue's backlog, not N invocations' worth of history: one ``INSERT ... SELECT
generate_series`` per table, then ``ANALYZE`` so the planner sees the sizes as
autovacuum would report them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg


@dataclass(frozen=True)
class Cluster:
    """What :func:`seed_cluster` writes.

    :param invocations: orchestrator rows, over ``apps`` apps (the first app gets the
        remainder).
    :param in_flight: of those, per thousand, invocations not final: registered and queued
        (half of them), pending, running and retry.
    :param runners: heartbeat rows per app; one in ten is alive.
    :param executions: atomic-service executions per app, one of them running.
    :param queues: queues per app; the queued invocations are spread over them and over
        two priorities.
    """

    invocations: int = 1_000_000
    apps: int = 2
    in_flight: int = 10
    runners: int = 200
    executions: int = 1_000
    queues: int = 3


SEED_SQL = {
    # Status by position: of each 1000 invocations, `in_flight` are not final, spread
    # over registered (half), pending, running and retry; 1 in 50 of the rest failed.
    "pynenc_orchestrator_invocation": """
        INSERT INTO pynenc_orchestrator_invocation (app_id, invocation_id, task_id, call_id,
            status, status_owner_id, status_set_at, retries, registered_at, purgeable_since)
        SELECT 'metrics-app-' || (i %% %(apps)s), 'inv-' || i, 'tasks.work' || (k %% 7),
               'tasks.work:' || i,
               CASE WHEN k %% 1000 >= %(in_flight)s THEN
                        CASE WHEN k %% 50 = 0 THEN 'failed' ELSE 'success' END
                    WHEN k %% 1000 < %(in_flight)s / 2 THEN 'registered'
                    WHEN k %% 3 = 0 THEN 'pending'
                    WHEN k %% 3 = 1 THEN 'running'
                    ELSE 'retry' END,
               'runner-' || (k %% %(runners)s),
               now() - (k %% 86400) * interval '1 second', 0,
               now() - (k %% 86400) * interval '1 second',
               CASE WHEN k %% 1000 >= %(in_flight)s THEN now() END
        FROM generate_series(0, %(invocations)s - 1) AS i, LATERAL (SELECT i / %(apps)s) AS x(k)""",
    # The registered invocations wait in the queues, routed over the last hour in
    # message_id order, as routing assigns them.
    "pynenc_broker_message": """
        INSERT INTO pynenc_broker_message (app_id, queue_name, priority, invocation_id,
                                           routed_at)
        SELECT 'metrics-app-' || (i %% %(apps)s), 'queue-' || (i %% %(queues)s),
               (i %% 2) * 10, 'inv-' || i,
               now() - interval '1 hour' + i * (interval '1 hour' / %(invocations)s)
        FROM generate_series(0, %(invocations)s - 1) AS i
        WHERE i / %(apps)s %% 1000 < %(in_flight)s / 2""",
    # One runner in ten alive; every queue consumed.
    "pynenc_runner_heartbeat": """
        INSERT INTO pynenc_runner_heartbeat (app_id, runner_id, can_run_atomic_service,
            consumed_queues, first_heartbeat_at, last_heartbeat_at)
        SELECT 'metrics-app-' || a, 'runner-' || r, true,
               ARRAY(SELECT 'queue-' || q FROM generate_series(0, %(queues)s - 1) AS q),
               now() - interval '2 days',
               CASE WHEN r %% 10 = 0 THEN now() ELSE now() - interval '1 day' END
        FROM generate_series(0, %(apps)s - 1) AS a, generate_series(0, %(runners)s - 1) AS r""",
    "pynenc_atomic_service_execution": """
        INSERT INTO pynenc_atomic_service_execution (app_id, atomic_service_run_id, runner_id,
            status, reason, start_time, end_time)
        SELECT 'metrics-app-' || a, 'run-' || e, 'runner-0',
               CASE WHEN e = 0 THEN 'running' ELSE 'completed' END, '',
               now() - e * interval '1 minute',
               CASE WHEN e > 0 THEN now() - e * interval '1 minute' + interval '1 second' END
        FROM generate_series(0, %(apps)s - 1) AS a, generate_series(0, %(executions)s - 1) AS e""",
    "pynenc_history_counter": """
        INSERT INTO pynenc_history_counter (app_id, status, shard, total)
        SELECT 'metrics-app-' || a, s.status, shard, %(invocations)s / %(apps)s / 16
        FROM generate_series(0, %(apps)s - 1) AS a,
             unnest(ARRAY['success', 'failed', 'retry']) AS s(status),
             generate_series(0, 15) AS shard""",
}


def seed_cluster(conn: psycopg.Connection[Any], cluster: Cluster = Cluster()) -> None:
    """Write ``cluster`` into the (empty, migrated) database of ``conn``, then ANALYZE."""
    params = {
        "invocations": cluster.invocations,
        "apps": cluster.apps,
        "in_flight": cluster.in_flight,
        "runners": cluster.runners,
        "executions": cluster.executions,
        "queues": cluster.queues,
    }
    for statement in SEED_SQL.values():
        conn.execute(statement, params)
    for table in SEED_SQL:
        conn.execute(f"ANALYZE {table}")
